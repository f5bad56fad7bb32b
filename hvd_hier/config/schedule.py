"""Which reduction Hier-AVG does at a given step: pure arithmetic, no torch, no Horovod.

Steps are the calls of ``optimizer.step()``, counted from 1. For ``t <= warmup_steps`` the
step is synchronous SGD (gradients averaged over all ranks). After that, with
``u = t - warmup_steps``, the model is averaged by the outermost level whose period divides
``u`` (at most one averaging per step), and by none if no period divides it. Levels are
listed innermost first; each period is a multiple of the one below.

A level with F fragments (``fragments``; the outermost only) reduces one fragment every
period/F steps: fragment f at the steps where u is (f + 1)·period/F modulo the period, so
the last fragment at the level's own steps. For the choice of the due level, its period is
period/F.

The two-level form (``local_steps`` K1, ``local_rounds`` K2) has periods ``(K1, K1 * K2)``:

* ``u % (K1 * K2) == 0``: global reduction, the model is averaged over all ranks;
* else ``u % K1 == 0``: local reduction, the model is averaged within the rank's group;
* else: nothing, the step is purely local.
"""

from __future__ import annotations

import enum
import operator
from dataclasses import dataclass
from typing import Dict, List, Optional

__all__ = ["Reduction", "HierSchedule", "check_int", "check_periods"]


class Reduction(str, enum.Enum):
    """What happens at one step besides the wrapped optimizer's update."""

    SYNC = "sync"  #: warmup: gradients averaged over all ranks before the update
    NONE = "none"  #: local step only
    LOCAL = "local"  #: model averaged within the local group after the update
    GLOBAL = "global"  #: model averaged over all ranks after the update


def check_int(name: str, value, minimum: int) -> int:
    """Return ``value`` as an int, or raise ``ValueError`` naming ``name`` and the value.

    Accepts Python and NumPy integers; rejects bools, floats (also integral ones such as
    ``4.0``) and anything below ``minimum``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r} (bool)")
    try:
        ivalue = operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})"
        ) from None
    if ivalue < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {ivalue}")
    return ivalue


def check_periods(periods) -> tuple:
    """The levels' periods as a tuple of ints, innermost first; ``ValueError`` naming the level
    whose period is not a positive integer or not a multiple of the period below it."""
    try:
        periods = list(periods)
    except TypeError:
        raise ValueError(f"periods must be a sequence of integers, got {periods!r}") from None
    if not periods:
        raise ValueError("periods must name at least one level, got none")
    out = []
    for i, p in enumerate(periods):
        p = check_int(f"the period of levels[{i}]", p, 1)
        if out and p % out[-1] != 0:
            raise ValueError(
                f"the period of levels[{i}] ({p}) is not a multiple of the period of "
                f"levels[{i - 1}] ({out[-1]}); each level's period must be a multiple of the "
                "one below")
        out.append(p)
    return tuple(out)


@dataclass(frozen=True)
class HierSchedule:
    """The Hier-AVG schedule: which level averages the model at each step.

    Either the two-level form, ``local_steps`` (K1) and ``local_rounds`` (K2), or
    ``periods``: one period per level, innermost first, each a multiple of the one below.
    The two-level form is ``periods=(K1, K1 * K2)``. With ``periods``, ``local_steps`` is the
    innermost period and ``local_rounds`` the outermost over the innermost.

    Example::

        >>> s = HierSchedule(local_steps=2, local_rounds=3, warmup_steps=1)
        >>> [s.reduction_at(t).value for t in range(1, 9)]
        ['sync', 'none', 'local', 'none', 'local', 'none', 'global', 'none']
        >>> s3 = HierSchedule(periods=(1, 2, 4))
        >>> [s3.level_at(t) for t in range(1, 9)]
        [0, 1, 0, 2, 0, 1, 0, 2]
        >>> f = HierSchedule(periods=(1, 8), fragments=(1, 4))
        >>> [(f.level_at(t), f.fragment_at(t)) for t in (2, 4, 6, 8)]
        [(1, 0), (1, 1), (1, 2), (1, 3)]
    """

    local_steps: Optional[int] = None
    local_rounds: Optional[int] = None
    warmup_steps: int = 0
    periods: Optional[tuple] = None
    fragments: Optional[tuple] = None  #: per level (1: the whole model at once)

    def __post_init__(self):
        set_ = object.__setattr__
        if self.periods is None:
            k1 = check_int("local_steps", self.local_steps, 1)
            k2 = check_int("local_rounds", self.local_rounds, 1)
            set_(self, "periods", (k1, k1 * k2))
        else:
            if self.local_steps is not None or self.local_rounds is not None:
                raise ValueError("pass either periods or local_steps and local_rounds, not both")
            periods = check_periods(self.periods)
            set_(self, "periods", periods)
            k1, k2 = periods[0], periods[-1] // periods[0]
        set_(self, "local_steps", k1)
        set_(self, "local_rounds", k2)
        set_(self, "warmup_steps", check_int("warmup_steps", self.warmup_steps, 0))
        set_(self, "fragments", _check_fragments(self.fragments, self.periods))

    @property
    def steps(self) -> tuple:
        """Steps between two reductions of each level: its period, over F with fragments."""
        return tuple(p // f for p, f in zip(self.periods, self.fragments))

    @property
    def period(self) -> int:
        """Steps between two reductions of the outermost level after warmup (K1 * K2)."""
        return self.periods[-1]

    def level_at(self, t: int) -> Optional[int]:
        """The level (0 = innermost) that averages the model at step ``t``; None during
        warmup and at steps without an averaging."""
        t = check_int("t", t, 1)
        if t <= self.warmup_steps:
            return None
        u, steps = t - self.warmup_steps, self.steps
        for level in range(len(steps) - 1, -1, -1):
            if u % steps[level] == 0:
                return level
        return None

    def fragment_at(self, t: int) -> Optional[int]:
        """The fragment the level of step ``t`` reduces (``level_at``): f where u is
        (f + 1)·period/F modulo the period; 0 for a level without fragments; None where
        ``level_at`` is None."""
        level = self.level_at(t)
        if level is None:
            return None
        u = t - self.warmup_steps
        return (u // self.steps[level] - 1) % self.fragments[level]

    def reduction_at(self, t: int) -> Reduction:
        """The reduction of step ``t`` (``t >= 1``): the outermost level is ``GLOBAL``, every
        other level ``LOCAL``."""
        t = check_int("t", t, 1)
        if t <= self.warmup_steps:
            return Reduction.SYNC
        level = self.level_at(t)
        if level is None:
            return Reduction.NONE
        return Reduction.GLOBAL if level == len(self.periods) - 1 else Reduction.LOCAL

    def level_counts_through(self, t: int) -> List[int]:
        """How many averagings each level does in steps ``1..t`` (closed form): level i
        averages where its period (over F, ``steps``) divides u and the next level's does
        not; a fragment's reduction counts as one."""
        t = check_int("t", t, 0)
        u = t - min(t, self.warmup_steps)
        p = self.steps
        return [u // p[i] - (u // p[i + 1] if i + 1 < len(p) else 0) for i in range(len(p))]

    def counts_through(self, t: int) -> Dict[str, int]:
        """How many steps of each kind happen in steps ``1..t`` (closed form); ``local``
        counts the averagings of every level but the outermost."""
        t = check_int("t", t, 0)
        sync = min(t, self.warmup_steps)
        per_level = self.level_counts_through(t)
        global_ = per_level[-1]
        local = sum(per_level[:-1])
        return {
            "sync": sync,
            "local": local,
            "global": global_,
            "none": t - sync - local - global_,
        }


def _check_fragments(fragments, periods) -> tuple:
    """Fragments per level (None: 1 each), each dividing its level's period, each level's
    period/F a multiple of the one below's."""
    if fragments is None:
        return (1,) * len(periods)
    fragments = tuple(check_int(f"the fragments of levels[{i}]", f, 1)
                      for i, f in enumerate(fragments))
    if len(fragments) != len(periods):
        raise ValueError(f"fragments must give one count per level ({len(periods)}), got "
                         f"{fragments!r}")
    steps = []
    for i, (p, f) in enumerate(zip(periods, fragments)):
        if p % f or (steps and (p // f) % steps[-1]):
            raise ValueError(f"levels[{i}]: fragments={f} must divide the period {p}, and "
                             "period/fragments be a multiple of the step of the level below")
        steps.append(p // f)
    return fragments
