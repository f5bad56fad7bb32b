"""The immediate strategies: the level's groups reduce at once, in one stage.

* ``PlainAverage``: the model's mean over the group, through the averager (packed buckets,
  or persistent flat storage reduced in place); then the level's outer step, if it has one.
* ``CompressedDeltas``: the mean of the deltas from the level's anchor, encoded
  (``hvd_hier.reduce.codec``); then the outer step on the decoded pseudo-gradient.
"""

from __future__ import annotations

from typing import Optional

import horovod.torch as hvd

from .strategy import Strategy, stopwatch

__all__ = ["PlainAverage", "CompressedDeltas"]


class PlainAverage(Strategy):
    """The group's mean of the averaged tensors, in place (a group of one: itself)."""

    def describe(self) -> str:
        return "plain average of flat storage" if self.ctx.flat_storage else \
            "plain average in buckets"

    def start(self, t: int, deadline: Optional[float]) -> None:
        level = self.level
        lt, elapsed = level.topology, stopwatch()
        divisor = self.check(t, deadline)[0] if len(lt.group) > 1 else 1
        moved = self.ctx.averager.average(lt.process_set, divisor, level.tag, deadline)
        if level.anchor is not None:
            level.anchor.after_mean()
        self.restart_below()
        level.stats.add(moved, elapsed())


class CompressedDeltas(Strategy):
    """The group's mean of the encoded deltas from the level's anchor (groups of two or
    more; a group of one averages plainly)."""

    def describe(self) -> str:
        return self.level.reducer.describe()

    def start(self, t: int, deadline: Optional[float]) -> None:
        level = self.level
        lt, anchor, elapsed = level.topology, level.anchor, stopwatch()
        divisor = self.check(t, deadline)[0]
        self.ctx.relink()
        outer = anchor.outer is not None
        moved = level.reducer.reduce(lt.process_set, lt.group, hvd.rank(), divisor, level.tag,
                                     deadline, to_gradient=outer)
        if outer:  # the tensors hold x̄ − ḡ = −(mean delta)
            anchor.outer_step(pseudo_gradient=True)
        self.restart_below()
        level.stats.add(moved, elapsed())
