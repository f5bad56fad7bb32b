"""The interface every reduction strategy offers its level, and what they share.

A level (``hvd_hier.runtime.level.LevelRuntime``) chooses its strategy once, when its groups
are built (``hvd_hier.reduce.choice``), and from then on only calls it:

* ``start(t, deadline)``: the level's reduction at step ``t``. An immediate strategy does all
  of it and returns None; an overlapped one returns the ``InFlight`` reduction it started.
* ``poll(red, submit)``: at a step boundary, move a reduction in flight on.
* ``finish(red, deadline)``: wait for a reduction in flight and compute its correction.

``Context`` is what every level's strategy shares: the averaged tensors' averager and the
options that decide how a reduction runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from .nonfinite import finite_divisor

__all__ = ["Context", "InFlight", "Strategy", "stopwatch"]


@dataclass
class Context:
    """What the strategies of one optimizer share."""

    averager: object  #: ``BucketAverager`` or ``FlatAverager``: the averaged tensors
    nonfinite: str  #: "raise" or "skip"
    deterministic: bool  #: one piece at a time (no fusion by Horovod)
    flat_storage: bool
    stats: object  #: the optimizer's ``Stats`` (skipped contributions)
    #: a fragment's (``hvd_hier.runtime.fragments``): the positions of its tensors among all
    #: the averaged tensors (None: all of them)
    indices: Optional[Sequence[int]] = None
    #: a fragment's: the level below averaged the whole model before this reduction
    lower_done: bool = False

    def pick(self, table: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """This context's tensors of ``table`` (one tensor per averaged tensor)."""
        return list(table) if self.indices is None else [table[i] for i in self.indices]

    def relink(self) -> None:
        """Flat storage: tensors whose ``.data`` was re-assigned go back into their slots (an
        anchor copies the flat buffers, and the compressed path reads the tensors)."""
        if self.flat_storage:
            self.averager.relink()


@dataclass
class InFlight:
    """One staged reduction on this rank: started at step ``start``, added at ``due``."""

    level: int
    start: int
    due: int
    dropped: bool = False  #: it takes r, not x + c (its values were left out, or D = 0)
    pipeline: Optional[object] = None  #: the ``Pipeline`` of pieces still to run (None: none)
    scale: float = 1.0  #: the sums' factor: 1 / divisor (two stages: S / divisor)
    means: Optional[List[torch.Tensor]] = None  #: compressed: the encoded means
    items: Optional[list] = None  #: what the pieces reduce (chunks, or the means)
    owned: Optional[List[int]] = None  #: the pieces this rank reduces
    correction: Optional[List[torch.Tensor]] = None  #: c = r − s (or r), once finished

    @property
    def running(self) -> bool:
        return self.correction is None


def stopwatch():
    """A clock for a level's statistics: the returned function gives the seconds since."""
    began = time.perf_counter()
    return lambda: time.perf_counter() - began


class Strategy:
    """How one level reduces (see the module's docstring). ``below``: the levels under this
    one, innermost first (their anchors start again from the model this level makes)."""

    def __init__(self, level, ctx: Context, below: Sequence):
        self.level, self.ctx, self.below = level, ctx, list(below)

    def describe(self) -> str:
        """What the reduction does, in a few words (the level's ``repr`` shows it)."""
        raise NotImplementedError

    def start(self, t: int, deadline: Optional[float]) -> Optional[InFlight]:
        raise NotImplementedError

    def poll(self, red: InFlight, submit: bool) -> None:
        """Nothing to move on: an immediate strategy leaves nothing in flight."""

    def finish(self, red: InFlight, deadline: Optional[float]) -> None:
        """Nothing to wait for: an immediate strategy leaves nothing in flight."""

    # -- for the strategies ----------------------------------------------------------------
    def check(self, t: int, deadline: Optional[float], table=None):
        """The non-finite policy before the reduction of ``table`` (default: the averaged
        tensors): ``(divisor, dropped)`` (``hvd_hier.reduce.nonfinite.finite_divisor``)."""
        table = self.ctx.averager.tensors if table is None else table
        return finite_divisor(self.level, table, t, deadline, self.ctx.nonfinite, self.ctx.stats)

    def restart_below(self) -> None:
        """The levels below start again from the model this level made: their anchors."""
        for below in self.below:
            below.retake()
