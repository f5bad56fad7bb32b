"""The run-time state of one hvd_hier optimizer, as a few named objects.

``opt.hier_state()`` returns the ``HierState``: the validated configuration, the tensors,
this rank's position in the schedule, the topology of every level, the averagers and the
counters. Tests and tools read it; only the optimizer writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .config import HierConfig, Tensors
from .topology import Topology

__all__ = ["Position", "LevelStats", "Stats", "HierState"]

# The two-level counters of averaging_stats() and of checkpoints, in that order.
TWO_LEVEL_KEYS = ("local_averages", "global_averages", "bytes_local", "bytes_global",
                  "seconds_local", "seconds_global")


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
    """This rank's counters: one ``LevelStats`` per level, and the steps and contributions
    that were skipped. The two-level counters are derived: ``local_*`` add up every level but
    the outermost, ``global_*`` are the outermost's."""

    levels: List[LevelStats]
    skipped_steps: int = 0  #: updates a GradScaler skipped on this rank
    skipped_contributions: int = 0  #: non-finite ranks left out (nonfinite="skip")

    @classmethod
    def zero(cls, num_levels: int) -> "Stats":
        return cls([LevelStats() for _ in range(num_levels)])

    def two_level(self) -> Dict[str, object]:
        inner, outer = self.levels[:-1], self.levels[-1]
        return {"local_averages": sum(s.averages for s in inner),
                "global_averages": outer.averages,
                "bytes_local": sum(s.bytes for s in inner), "bytes_global": outer.bytes,
                "seconds_local": sum(s.seconds for s in inner), "seconds_global": outer.seconds,
                "skipped_steps": self.skipped_steps,
                "skipped_contributions": self.skipped_contributions}

    def to_dict(self) -> Dict[str, object]:
        """For checkpoints: the two-level counters and every level's."""
        return {**self.two_level(), "levels": [dict(vars(s)) for s in self.levels]}

    def load(self, saved: Dict[str, object]) -> None:
        """Restore from ``to_dict()`` (or from a checkpoint of two levels that has only the
        two-level counters)."""
        self.skipped_steps = int(saved.get("skipped_steps", 0))
        self.skipped_contributions = int(saved.get("skipped_contributions", 0))
        levels = saved.get("levels")
        if levels is not None and len(levels) == len(self.levels):
            self.levels = [LevelStats(**lv) for lv in levels]
        elif len(self.levels) == 2 and "local_averages" in saved:
            self.levels = [
                LevelStats(saved["local_averages"], saved["bytes_local"], saved["seconds_local"]),
                LevelStats(saved["global_averages"], saved["bytes_global"], saved["seconds_global"])]


@dataclass
class HierState:
    """Everything one optimizer keeps besides the wrapped optimizer's own state."""

    config: HierConfig
    process_set: object  #: the optimizer's Horovod process set
    tensors: Tensors  #: what is averaged: parameters, then floating-point buffers
    base: type  #: the wrapped optimizer's class
    averager: object = None  #: BucketAverager or FlatAverager (hvd_hier.averaging.Averager)
    position: Position = field(default_factory=Position)
    topology: Optional[Topology] = None  #: None until built (an elastic job's first step)
    stats: Stats = None
    grad_averager: object = None  #: deterministic=True: the warmup gradients' averager
    trained: List = field(default_factory=list)  #: deterministic=True: params with grad
    #: per level: its ``hvd_hier.anchor.Anchor`` (levels with ``outer`` or ``compression``),
    #: else None
    anchors: List = field(default_factory=list)
    #: overlapped reductions started and not yet added (``hvd_hier.overlap.InFlight``)
    in_flight: List = field(default_factory=list)
    #: per overlapped level: its copies of the averaged tensors (``hvd_hier.overlap``)
    overlap_copies: Dict = field(default_factory=dict)

    def __post_init__(self):
        if self.stats is None:
            self.stats = Stats.zero(len(self.config.levels))
        self.names_by_id = {id(p): n for p, n in zip(self.tensors.params, self.tensors.names)}
