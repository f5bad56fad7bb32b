"""The run-time state of one hvd_hier optimizer, as a few named objects.

``opt.hier_state()`` returns the ``HierState``: the validated configuration, the tensors and
their averager, this rank's position in the schedule, the topology of every level, the
levels themselves (``hvd_hier.runtime.level.LevelRuntime``: each with its groups, anchor,
strategy, statistics and reductions in flight) and the counters. Tests and tools read it;
only the optimizer writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..config.options import HierConfig, Tensors
from ..topology.process_sets import Topology

__all__ = ["Position", "LevelStats", "Stats", "HierState", "averaging_stats"]


@dataclass
class Position:
    """Where this rank is in the schedule."""

    t: int = 0  #: calls of step() so far
    agreed: bool = False  #: the ranks have agreed on ``t`` since the groups were built
    generation: object = None  #: the Horovod instance the groups were built in (None: not yet)


@dataclass
class LevelStats:
    """What one level's averagings did on this rank."""

    averages: int = 0
    bytes: int = 0  #: payload reduced (the averaged tensors; flat storage: its buffers)
    seconds: float = 0.0

    def add(self, moved: int, seconds: float) -> None:
        self.averages += 1
        self.bytes += moved
        self.seconds += seconds


@dataclass
class Stats:
    """This rank's counters besides the levels' own (``LevelRuntime.stats``): the steps and
    contributions that were skipped. With the levels' statistics (``levels``: their
    ``LevelStats``, innermost first) it gives the two-level counters: ``local_*`` add up every
    level but the outermost, ``global_*`` are the outermost's."""

    skipped_steps: int = 0  #: updates a GradScaler skipped on this rank
    skipped_contributions: int = 0  #: non-finite ranks left out (nonfinite="skip")

    def two_level(self, levels: List[LevelStats]) -> Dict[str, object]:
        inner, outer = levels[:-1], levels[-1]
        return {"local_averages": sum(s.averages for s in inner),
                "global_averages": outer.averages,
                "bytes_local": sum(s.bytes for s in inner), "bytes_global": outer.bytes,
                "seconds_local": sum(s.seconds for s in inner), "seconds_global": outer.seconds,
                "skipped_steps": self.skipped_steps,
                "skipped_contributions": self.skipped_contributions}

    def to_dict(self, levels: List[LevelStats]) -> Dict[str, object]:
        """For checkpoints: the two-level counters and every level's."""
        return {**self.two_level(levels), "levels": [dict(vars(s)) for s in levels]}

    def load(self, saved: Dict[str, object], levels: List[LevelStats]) -> None:
        """Restore from ``to_dict()`` (or from a checkpoint of two levels that has only the
        two-level counters), the levels' statistics in place."""
        self.skipped_steps = int(saved.get("skipped_steps", 0))
        self.skipped_contributions = int(saved.get("skipped_contributions", 0))
        per_level = saved.get("levels")
        if per_level is not None and len(per_level) == len(levels):
            for mine, theirs in zip(levels, per_level):
                vars(mine).update(vars(LevelStats(**theirs)))
        elif len(levels) == 2 and "local_averages" in saved:
            vars(levels[0]).update(vars(LevelStats(
                saved["local_averages"], saved["bytes_local"], saved["seconds_local"])))
            vars(levels[1]).update(vars(LevelStats(
                saved["global_averages"], saved["bytes_global"], saved["seconds_global"])))

    def zero(self, levels: List[LevelStats]) -> None:
        """Every counter back to zero (a checkpoint of a plain optimizer)."""
        self.skipped_steps = self.skipped_contributions = 0
        for s in levels:
            vars(s).update(vars(LevelStats()))


@dataclass
class HierState:
    """Everything one optimizer keeps besides the wrapped optimizer's own state."""

    config: HierConfig
    process_set: object  #: the optimizer's Horovod process set
    tensors: Tensors  #: what is averaged: parameters, then floating-point buffers
    base: type  #: the wrapped optimizer's class
    averager: object = None  #: BucketAverager or FlatAverager (hvd_hier.reduce)
    ctx: object = None  #: what the levels' strategies share (``hvd_hier.reduce.strategy``)
    position: Position = field(default_factory=Position)
    topology: Optional[Topology] = None  #: None until built (an elastic job's first step)
    #: one ``LevelRuntime`` per level, innermost first
    levels: List = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)  #: the counters besides the levels' own
    grad_averager: object = None  #: deterministic=True: the warmup gradients' averager
    trained: List = field(default_factory=list)  #: deterministic=True: params with grad
    levels_logged: bool = False  #: the first rank logged what each level does

    def __post_init__(self):
        self.names_by_id = {id(p): n for p, n in zip(self.tensors.params, self.tensors.names)}

    def level_stats(self) -> List[LevelStats]:
        """Every level's statistics, innermost first."""
        return [lv.stats for lv in self.levels]

    def in_flight(self) -> List:
        """Every level's staged reductions in flight or pending, in the order they started."""
        return sorted((red for lv in self.levels for red in lv.in_flight),
                      key=lambda red: red.start)


def averaging_stats(h: HierState) -> Dict[str, object]:
    """This rank's counters: steps taken and what the averagings did.

    Keys: ``steps`` (calls of step(), the spurious one of broadcast_optimizer_state not
    counted), ``sync_steps`` (warmup steps), ``local_averages``, ``global_averages``,
    ``bytes_local`` and ``bytes_global`` (payload bytes reduced by this rank: the size of
    the averaged tensors, with flat storage of its buffers, padding included; for a
    compressed level the encoded bytes; not wire traffic; 0 for local averagings of a
    group of one),
    ``seconds_local``, ``seconds_global`` (wall time in the averagings),
    ``skipped_steps`` (steps whose update a ``torch.amp.GradScaler`` skipped on this rank
    because its gradients overflowed: the schedule advanced all the same),
    ``skipped_contributions`` (with ``nonfinite="skip"``: non-finite ranks left out of
    this rank's averagings), ``group`` (this rank's local group), ``group_size``,
    ``num_groups``, ``groups`` (every local group). The last four are None in an elastic
    job until its first ``step()`` builds the groups.

    With more than two levels, ``local_*`` add up every level but the outermost and
    ``global_*`` count the outermost; ``group``, ``group_size``, ``num_groups`` and
    ``groups`` are the innermost level's. ``levels`` has one dict per level, innermost
    first: ``period``, ``group_size`` (as passed), ``averages``, ``bytes``, ``seconds``,
    ``group`` and ``groups`` (None until the groups are built).

    A level that reduces in two stages (its groups made of two or more groups of the
    level below, all of one size S >= 2: each rank reduces 1/S of the model across the
    other groups below, then they gather) counts the whole payload, as in one stage. An
    overlapped level counts an averaging when it starts, and, because the level below
    averages first, one of the level below too; its ``seconds`` are the time ``step()``
    spent on it (starting, moving its pieces on, waiting at t + D), not its duration.
    """
    out = h.stats.two_level(h.level_stats())
    out["steps"] = h.position.t
    out["sync_steps"] = min(h.position.t, h.config.schedule.warmup_steps)
    inner = h.levels[0].topology  # None until an elastic job's first step
    out["group"] = None if inner is None else list(inner.group)
    out["group_size"] = None if inner is None else len(inner.group)
    out["num_groups"] = None if inner is None else len(inner.groups)
    out["groups"] = None if inner is None else [list(g) for g in inner.groups]
    out["levels"] = [_level_stats(lv) for lv in h.levels]
    return out


def _level_stats(level) -> Dict[str, object]:
    size, lt = level.spec.group_size, level.topology
    return dict(vars(level.stats), period=level.spec.period,
                group_size=[list(g) for g in size] if isinstance(size, tuple) else size,
                group=None if lt is None else list(lt.group),
                groups=None if lt is None else [list(g) for g in lt.groups])
