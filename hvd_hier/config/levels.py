"""Averaging levels as the user gives them, checked: ``Level``, the two-level shorthand and
the group sizes. Pure: no torch, no Horovod (``hvd_hier.topology.groups`` turns them into
groups of ranks).

A job has one or more levels, innermost first: ``Level(period, group_size)``. At a step
``u = t - warmup_steps >= 1`` the outermost level whose period divides ``u`` averages the
model within each of its groups. Each period is a multiple of the one below; each level's
groups are unions of the groups below; the outermost level spans the whole process set.

``group_size`` is an int (contiguous blocks of that many ranks of the process set, in rank
order), ``"local"`` (the ranks of one host), ``"all"`` (the whole process set), or an
explicit list of rank lists (e.g. racks) that partitions the process set.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

from .level_checks import CODECS, OUTER_EXAMPLE, at, check_fragments, check_options, \
    check_overlap
from .schedule import check_int, check_periods

__all__ = ["ALL", "LOCAL", "Level", "KNOWN_OPTIONS", "CODECS", "OUTER_EXAMPLE", "check_group_size", "check_levels",
           "levels_from_args", "describe_callable", "check_options", "check_overlap", "check_fragments", "at"]

ALL = "all"
LOCAL = "local"
KNOWN_OPTIONS = frozenset({"outer", "compression", "overlap_steps", "fragments",
                           "error_feedback"})  # per-level options (see Level)

def check_group_size(group_size, set_size: Optional[int] = None):
    """Validate ``group_size`` against a process set of ``set_size`` ranks.

    Returns ``"local"`` or the group size as an int; raises ``ValueError`` naming the value.
    With ``set_size=None`` only the kind of value is checked (elastic jobs, whose size
    changes, fit the groups to each new size with ``hvd_hier.topology.groups.adapt_level_groups``).
    """
    if isinstance(group_size, str):
        if group_size != LOCAL:
            raise ValueError(
                f"group_size must be an integer >= 1 or 'local', got {group_size!r}"
            )
        return LOCAL
    if isinstance(group_size, bool):
        raise ValueError(f"group_size must be an integer >= 1 or 'local', got {group_size!r}")
    try:
        size = check_int("group_size", group_size, 1)
    except ValueError:
        raise ValueError(
            f"group_size must be an integer >= 1 or 'local', got {group_size!r}"
        ) from None
    if set_size is None:
        return size
    if size > set_size:
        raise ValueError(
            f"group_size={size} is larger than process_set, which has {set_size} ranks"
        )
    if set_size % size != 0:
        raise ValueError(
            f"group_size={size} does not divide the {set_size} ranks of process_set; "
            f"pick a divisor of {set_size} or group_size='local'"
        )
    return size


def describe_callable(f) -> str:
    """A name for ``f`` that is the same in every process (no addresses): its module and
    qualified name, with a ``functools.partial``'s arguments."""
    if isinstance(f, functools.partial):
        args = [repr(a) for a in f.args] + [f"{k}={v!r}" for k, v in sorted(f.keywords.items())]
        return f"partial({', '.join([describe_callable(f.func)] + args)})"
    name = getattr(f, "__qualname__", None) or type(f).__qualname__
    module = getattr(f, "__module__", None) or type(f).__module__
    return f"{module}.{name}"


def _no_overlap(name, value) -> bool:
    """``overlap_steps=0``, ``fragments=1`` and ``error_feedback=True``: the same level as
    without the option."""
    return (name, type(value), value) in (("overlap_steps", int, 0), ("fragments", int, 1),
                                          ("error_feedback", bool, True))


def _describe_option(value):
    return describe_callable(value) if callable(value) else value


class Level:
    """One averaging level: every ``period`` steps (after warmup) the model is averaged
    within groups of ``group_size`` ranks, unless a level above averages at that step.

    ``group_size``: an int, ``"local"``, ``"all"`` or a list of rank lists. Keyword options
    configure the level's reduction (an unknown one is an error):

    * ``outer``: a callable that takes a list of tensors and returns a
      ``torch.optim.Optimizer`` over them, e.g. ``functools.partial(torch.optim.SGD,
      lr=0.7, momentum=0.9, nesterov=True)``. Each group of the level then keeps an anchor
      x̄ (the model it last agreed on); at the level's reduction the outer optimizer steps
      on x̄ − ḡ (ḡ: the group's mean) and the group's parameters become the new x̄
      (``hvd_hier.outer.anchor``). Costs one more copy of the averaged tensors.
    * ``compression``: ``"fp16"``, ``"bf16"``, ``"int8"``, ``"int4"``, ``"int2"`` or a ``TopK``
      (the largest few values of each chunk, e.g. ``TopK(0.02, values="int2")``): the level
      reduces the delta from its anchor, encoded (the integer codecs: one scale per chunk of
      2048 elements, with error feedback), instead of the full-precision model
      (``hvd_hier.reduce.codec``; int4 and int2: ``hvd_hier.reduce.gathered``). Also keeps an
      anchor.
    * ``overlap_steps``: D with 0 <= D < ``period``. With D >= 1 the level's reduction runs
      behind the next D steps (``hvd_hier.reduce.staged``): at its step t the level below averages
      first, the result s is reduced in the background, and at the end of step t + D every
      rank adds r − s (r: the level's result) to its parameters. 0 (the default) waits for
      the reduction at step t.
    * ``fragments``: F >= 1, the outermost level only (Streaming DiLoCo). The level's tensors
      are split into F fragments of about equal bytes (``hvd_hier.runtime.fragments``), and
      fragment f is reduced alone at the steps u = (f + 1)·period/F (mod period), so each
      reduction carries about 1/F of the model; at those steps the level below averages the
      whole model first. period/F must be a multiple of the period below, and
      ``overlap_steps`` smaller than period/F. Each fragment has its own anchor, outer
      optimizer and residuals. Not with ``flat_storage=True``.
    * ``error_feedback``: True (the default) or False, with an integer codec or a ``TopK``:
      False drops what the encoding lost instead of adding it to the next delta (the
      ablation that shows what error feedback buys).

    A tuple ``(period, group_size)`` in ``levels=`` is a ``Level`` without options.
    """

    __slots__ = ("period", "group_size", "options")

    def __init__(self, period, group_size=ALL, **options):
        object.__setattr__(self, "period", period)
        object.__setattr__(self, "group_size", group_size)
        # an option given as None (or overlap_steps=0) is the default: the same level as
        # without it
        object.__setattr__(self, "options", {k: v for k, v in options.items()
                                             if v is not None and not _no_overlap(k, v)})

    def __setattr__(self, name, value):
        raise AttributeError("Level is immutable")

    def _key(self):
        return (self.period, self.group_size, tuple(sorted(self.options.items())))

    def __eq__(self, other):
        return isinstance(other, Level) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        opts = "".join(f", {k}={v!r}" for k, v in sorted(self.options.items()))
        return f"Level({self.period!r}, {self.group_size!r}{opts})"

    def describe(self) -> Tuple:
        """A plain, comparable form, the same in every process (for the ranks' agreement and
        checkpoints): callables are named by ``describe_callable``."""
        return (self.period, self.group_size,
                tuple((k, _describe_option(v)) for k, v in sorted(self.options.items())))


def _check_size(where: str, group_size):
    """An int >= 1, 'local', 'all' or a partition given as rank lists (tuples of tuples)."""
    if isinstance(group_size, str):
        if group_size not in (LOCAL, ALL):
            raise ValueError(f"{where}: group_size must be an integer >= 1, 'local', 'all' or a "
                             f"list of rank lists, got {group_size!r}")
        return group_size
    if isinstance(group_size, (list, tuple)):
        groups = []
        seen = set()
        for g in group_size:
            if isinstance(g, (str, bytes)) or not hasattr(g, "__iter__"):
                raise ValueError(f"{where}: group_size as rank lists must hold lists of ranks, "
                                 f"got {g!r} in {group_size!r}")
            ranks = tuple(check_int(f"{where}: a rank", r, 0) for r in g)
            if not ranks:
                raise ValueError(f"{where}: group_size has an empty group in {group_size!r}")
            for r in ranks:
                if r in seen:
                    raise ValueError(f"{where}: rank {r} is in two groups of {group_size!r}")
                seen.add(r)
            groups.append(ranks)
        if not groups:
            raise ValueError(f"{where}: group_size as rank lists needs at least one group")
        return tuple(groups)
    try:
        return check_group_size(group_size)
    except ValueError:
        raise ValueError(f"{where}: group_size must be an integer >= 1, 'local', 'all' or a "
                         f"list of rank lists, got {group_size!r}") from None


def check_levels(levels) -> Tuple[Level, ...]:
    """Validate ``levels=`` without knowing the process set: each item a ``Level`` or a
    ``(period, group_size)`` pair, periods multiples of the one below, known options only,
    and an outermost level that can span the whole set. Returns normalised ``Level``s."""
    if isinstance(levels, (str, bytes, Level)) or not hasattr(levels, "__iter__"):
        raise ValueError(f"levels must be a list of (period, group_size) pairs or "
                         f"hvd_hier.Level, got {levels!r}")
    items = list(levels)
    if not items:
        raise ValueError("levels must name at least one level, got an empty list")
    out = []
    for i, item in enumerate(items):
        where = f"levels[{i}]"
        if isinstance(item, Level):
            period, size, options = item.period, item.group_size, item.options
        elif isinstance(item, tuple) and len(item) == 2:
            (period, size), options = item, {}
        else:
            raise ValueError(f"{where} must be a (period, group_size) pair or hvd_hier.Level, "
                             f"got {item!r}")
        unknown = sorted(set(options) - KNOWN_OPTIONS)
        if unknown:
            known = ", ".join(sorted(KNOWN_OPTIONS)) or "none yet"
            raise ValueError(f"{where}: unknown Level option {unknown[0]!r} (= "
                             f"{options[unknown[0]]!r}); the known options are: {known}")
        check_options(where, options)
        period = check_int(f"the period of {where}", period, 1)
        check_overlap(where, options, period)
        out.append(Level(period, _check_size(where, size), **options))
    for i, lv in enumerate(out):
        check_fragments(f"levels[{i}]", lv, out[i - 1].period if i else None,
                        outermost=i == len(out) - 1)
    check_periods([lv.period for lv in out])
    for i in range(1, len(out)):
        below, above = out[i - 1].group_size, out[i].group_size
        if isinstance(below, int) and isinstance(above, int) and above % below != 0:
            raise ValueError(f"levels[{i}]: group_size={above} is not a multiple of group_size="
                             f"{below} of levels[{i - 1}], so its groups cannot be unions of "
                             "the groups below")
    top = out[-1].group_size
    if top == LOCAL or (isinstance(top, tuple) and len(top) != 1):
        raise ValueError(f"levels[{len(out) - 1}], the outermost level, must span the whole "
                         f"process set (group_size 'all' or its size), got {top!r}")
    return tuple(out)


def levels_from_args(levels, local_steps, local_rounds, group_size, outer=None,
                     global_compression=None, overlap_steps=None) -> Tuple[Level, ...]:
    """``levels=`` or the two-level shorthand (``None`` where not passed; defaults K1=4,
    K2=4, S="local"): ``[(K1, S), (K1 * K2, "all", outer=outer,
    compression=global_compression, overlap_steps=overlap_steps)]``. Both at once is an
    error."""
    if levels is not None:
        for name, value, option in (("outer", outer, "outer"),
                                    ("global_compression", global_compression, "compression"),
                                    ("overlap_steps", overlap_steps, "overlap_steps")):
            if value is not None:
                raise ValueError(f"{name}= belongs to the two-level form; with levels=, give the "
                                 f"level its option: Level(period, group_size, {option}=...)")
        given = [n for n, v in (("local_steps", local_steps), ("local_rounds", local_rounds),
                                ("group_size", group_size)) if v is not None]
        if given:
            raise ValueError(f"pass either levels= or {', '.join(given)}, not both: "
                             "levels=[(K1, S), (K1 * K2, 'all')] is the two-level form")
        return check_levels(levels)
    k1 = check_int("local_steps", 4 if local_steps is None else local_steps, 1)
    k2 = check_int("local_rounds", 4 if local_rounds is None else local_rounds, 1)
    size = check_group_size(LOCAL if group_size is None else group_size)
    options = {k: v for k, v in (("outer", outer), ("compression", global_compression),
                                 ("overlap_steps", overlap_steps)) if v is not None}
    check_options("", options, compression_name="global_compression")
    check_overlap("", options, k1 * k2, "local_steps * local_rounds =")
    return (Level(k1, size), Level(k1 * k2, ALL, **options))


