"""Averaging levels: which ranks average together at which period. Pure: no torch, no Horovod.

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
from typing import Dict, List, Optional, Sequence, Tuple

from .schedule import check_int, check_periods
from .topology import LOCAL, _by_host, check_group_size

__all__ = ["ALL", "LOCAL", "Level", "KNOWN_OPTIONS", "check_levels", "levels_from_args",
           "plan_level_groups", "check_level_sizes", "adapt_level_groups", "describe_callable", "check_options", "check_overlap", "CODECS"]

ALL = "all"
KNOWN_OPTIONS = frozenset({"outer", "compression", "overlap_steps"})  # per-level options (see Level)
CODECS = ("fp16", "bf16", "int8")  #: the values of a level's ``compression``
OUTER_EXAMPLE = "functools.partial(torch.optim.SGD, lr=0.7, momentum=0.9, nesterov=True)"


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
    """``overlap_steps=0``: the same level as without the option."""
    return name == "overlap_steps" and type(value) is int and value == 0


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
      (``hvd_hier.anchor``). Costs one more copy of the averaged tensors.
    * ``compression``: ``"fp16"``, ``"bf16"`` or ``"int8"``: the level reduces the delta from
      its anchor, encoded (int8: one scale per chunk of 2048 elements, with error feedback),
      instead of the full-precision model (``hvd_hier.compressed``). Also keeps an anchor.
    * ``overlap_steps``: D with 0 <= D < ``period``. With D >= 1 the level's reduction runs
      behind the next D steps (``hvd_hier.overlap``): at its step t the level below averages
      first, the result s is reduced in the background, and at the end of step t + D every
      rank adds r − s (r: the level's result) to its parameters. 0 (the default) waits for
      the reduction at step t.

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


def check_overlap(where: str, options, period: int,
                  period_name: str = "the level's period") -> None:
    """``overlap_steps`` (already an int >= 0) must end the reduction before the level's next
    one: D < period."""
    d = options.get("overlap_steps")
    if d is not None and d >= period:
        raise ValueError(_at(where, f"overlap_steps={d} must be smaller than {period_name} "
                                    f"{period}: the overlapped reduction ends D steps after it "
                                    "starts, before the level's next one"))


def check_options(where: str, options, compression_name: str = "compression") -> None:
    """The values of a level's known options (``where`` names the level; "" for none;
    ``compression_name``: what the user called the codec's argument)."""
    if "overlap_steps" in options:
        d = options["overlap_steps"]
        if type(d) is not int or d < 0:
            raise ValueError(_at(where, f"overlap_steps must be an integer >= 0 (steps the "
                                        f"reduction runs behind), got {d!r}"))
    codec = options.get("compression")
    if codec is not None and codec not in CODECS:
        raise ValueError(_at(where, f"{compression_name} must be one of {', '.join(CODECS)} "
                                    f"(or None), got {codec!r}"))
    outer = options.get("outer")
    if outer is not None and not callable(outer):
        raise ValueError(_at(where, "outer must be a callable that returns a torch.optim.Optimizer "
                                    f"over the tensors it is given (e.g. {OUTER_EXAMPLE}), got "
                                    f"{outer!r}"))


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


def _at(where: str, message: str) -> str:
    """``message`` about the level ``where`` ("" for the two-level shorthand: no prefix)."""
    return f"{where}: {message}" if where else message


def _groups_of(where: str, size, ranks: List[int], hosts: Optional[Sequence[str]]):
    n = len(ranks)
    if size == ALL:
        return [list(ranks)]
    if size == LOCAL:
        by_host = _by_host(ranks, hosts)
        counts = {h: len(m) for h, m in by_host.items()}
        if len(set(counts.values())) != 1:
            hint = "" if where else f"; pass an integer group_size that divides {n}"
            raise ValueError(_at(where, "group_size='local' needs the same number of ranks on "
                                        f"every host, got {counts}{hint}"))
        return list(by_host.values())
    if isinstance(size, tuple):
        inside = sorted(r for g in size for r in g)
        if inside != sorted(ranks):
            missing = sorted(set(ranks) - set(inside))
            extra = sorted(set(inside) - set(ranks))
            what = (f"misses ranks {missing}" if missing else "") + \
                   (" and " if missing and extra else "") + \
                   (f"names ranks {extra} outside it" if extra else "")
            raise ValueError(_at(where, f"the groups {[list(g) for g in size]} must partition "
                                        f"the process set {ranks}, but {what}"))
        return [list(g) for g in size]
    try:
        check_group_size(size, n)
    except ValueError as exc:
        raise ValueError(_at(where, str(exc))) from None
    return [ranks[i:i + size] for i in range(0, n, size)]


def _check_nested(levels_groups: List[List[List[int]]]) -> None:
    for i in range(1, len(levels_groups)):
        owner = {r: j for j, g in enumerate(levels_groups[i]) for r in g}
        for g in levels_groups[i - 1]:
            if len({owner[r] for r in g}) > 1:
                raise ValueError(
                    f"the groups of levels[{i}] ({levels_groups[i]}) are not unions of the groups "
                    f"of levels[{i - 1}] ({levels_groups[i - 1]}): group {g} of levels[{i - 1}] is "
                    f"split; each level's groups must be made of whole groups of the level below")


def _labels(levels, labels) -> List[str]:
    return [f"levels[{i}]" for i in range(len(levels))] if labels is None else list(labels)


def plan_level_groups(ranks: Sequence[int], levels: Sequence[Level],
                      hosts: Optional[Sequence[str]] = None,
                      labels: Optional[Sequence[str]] = None) -> List[List[List[int]]]:
    """Each level's groups over ``ranks`` (a process set's global ranks, in order;
    ``hosts[i]`` is the host of ``ranks[i]``): ``ValueError`` naming the level when a size
    does not fit, the outermost level does not span the set, or the levels are not nested.
    ``labels`` name the levels in messages (default ``levels[i]``; ``""``: no name)."""
    ranks = list(ranks)
    names = _labels(levels, labels)
    out = [_groups_of(names[i], lv.group_size, ranks, hosts) for i, lv in enumerate(levels)]
    if len(out[-1]) != 1:
        raise ValueError(f"levels[{len(out) - 1}], the outermost level, must span the whole process "
                         f"set of {len(ranks)} ranks, got groups {out[-1]}")
    _check_nested(out)
    return out


def check_level_sizes(ranks: Sequence[int], levels: Sequence[Level],
                      labels: Optional[Sequence[str]] = None) -> None:
    """What can be checked of the levels' groups before the hosts are known (before any
    collective): every level but the ``"local"`` ones must fit ``ranks``, the outermost must
    span them, and without a ``"local"`` level the groups must nest."""
    ranks = list(ranks)
    if not any(lv.group_size == LOCAL for lv in levels):
        plan_level_groups(ranks, levels, labels=labels)
        return
    names = _labels(levels, labels)
    for i, lv in enumerate(levels):
        if lv.group_size != LOCAL:
            groups = _groups_of(names[i], lv.group_size, ranks, None)
            if i == len(levels) - 1 and len(groups) != 1:
                raise ValueError(f"levels[{i}], the outermost level, must span the whole process "
                                 f"set of {len(ranks)} ranks, got groups {groups}")


def adapt_level_groups(ranks: Sequence[int], levels: Sequence[Level],
                       hosts: Optional[Sequence[str]] = None,
                       labels: Optional[Sequence[str]] = None) -> Tuple[List[List[List[int]]], List[str]]:
    """The levels' groups in an elastic job, whose size changes: ``(groups per level, notes)``.

    Where ``plan_level_groups`` would refuse the new size, a rule applies, level by level
    from the innermost, and each note says what it did: an integer group size becomes the
    largest divisor of the number of ranks that is not above it and is a multiple of the
    fitted size of the level below (when that is an integer too), so that blocks stay nested;
    ``"local"`` keeps one group per host even when the hosts hold different numbers of
    ranks; the outermost level spans every rank. Finally each level's groups are cut along
    the groups of the level above (outermost inward), which keeps them nested whatever the
    hosts. Explicit rank lists cannot follow a changing job and are refused. ``labels`` name
    the levels in the notes (default ``levels[i]``; ``""`` for none, as the two-level
    shorthand's notes have).
    """
    ranks = list(ranks)
    labels = _labels(levels, labels)

    def prefix(i):
        return f"{labels[i]}: " if labels[i] else ""

    n = len(ranks)
    notes: List[str] = []
    out: List[List[List[int]]] = []
    inner_size: Optional[int] = None
    for i, lv in enumerate(levels):
        where = f"levels[{i}]"
        size = lv.group_size
        if i == len(levels) - 1:
            size = ALL
        if isinstance(size, tuple):
            raise ValueError(f"{where}: explicit rank lists cannot follow an elastic job's "
                             "changing ranks; use an integer group_size, 'local' or 'all'")
        if size == ALL:
            out.append(list(map(list, [ranks])))
            inner_size = n
            continue
        if size == LOCAL:
            by_host = _by_host(ranks, hosts)
            counts = {h: len(m) for h, m in by_host.items()}
            if len(set(counts.values())) != 1:
                notes.append(f"{prefix(i)}the hosts hold different numbers of ranks ({counts}); "
                             "each host stays one local group")
            out.append(list(by_host.values()))
            inner_size = None
            continue
        step = inner_size if inner_size is not None and inner_size <= n else 1
        candidates = [d for d in range(1, min(size, n) + 1) if n % d == 0 and d % step == 0]
        fitted = max(candidates) if candidates else step
        if fitted != size:
            why = "is larger than" if size > n else "does not divide"
            multiple = f" that is a multiple of {step}" if step > 1 else ""
            notes.append(f"{prefix(i)}group_size={size} {why} the {n} rank{'s' if n != 1 else ''}; "
                         f"using groups of {fitted}, the largest divisor of {n} not above {size}"
                         f"{multiple}")
        out.append([ranks[k:k + fitted] for k in range(0, n, fitted)])
        inner_size = fitted
    for i in range(len(out) - 2, -1, -1):  # cut each level along the one above
        owner = {r: j for j, g in enumerate(out[i + 1]) for r in g}
        cut: Dict[Tuple[int, int], List[int]] = {}
        for k, g in enumerate(out[i]):
            for r in g:
                cut.setdefault((k, owner[r]), []).append(r)
        pieces = list(cut.values())
        if len(pieces) != len(out[i]):
            notes.append(f"{prefix(i)}groups cut along those of {labels[i + 1] or 'the level above'} "
                         f"to stay nested: {pieces}")
        out[i] = pieces
    return out, notes
