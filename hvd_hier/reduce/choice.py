"""Which strategy a level reduces with: decided here, once, when the level's groups are
built (and again when an elastic reset rebuilds them).

=====================================  =================================================
the level                              its strategy
=====================================  =================================================
``overlap_steps`` >= 1, or groups      ``Staged`` (``hvd_hier.reduce.staged``): pieces,
made of k >= 2 equal groups below      two stages where the groups allow, behind the next
(two stages)                           D steps if overlapped
``compression``, groups of 2 or more   ``CompressedDeltas``: encoded deltas, at once
otherwise                              ``PlainAverage``: the mean, through the averager
=====================================  =================================================

Every level also has an *immediate* strategy (the last two rows): what the level does when
the staged level above it needs its groups averaged first.
"""

from __future__ import annotations

from typing import Sequence

from .immediate import CompressedDeltas, PlainAverage
from .staged import Staged
from .strategy import Context, Strategy

__all__ = ["choose_immediate", "choose_strategy"]


def _compressed(level) -> bool:
    """A codec, and someone to exchange deltas with (a group of one averages plainly)."""
    return level.reducer is not None and len(level.topology.group) > 1


def choose_immediate(level, ctx: Context, below: Sequence) -> Strategy:
    """The level's reduction at once, in one stage."""
    cls = CompressedDeltas if _compressed(level) else PlainAverage
    return cls(level, ctx, below)


def choose_strategy(level, ctx: Context, below: Sequence, immediate: Strategy) -> Strategy:
    """The level's reduction at its own steps (see the module's table): staged, or its
    ``immediate`` strategy."""
    if level.overlap_steps or level.topology.cross_set is not None:
        return Staged(level, ctx, below, level.overlap_steps, _compressed(level))
    return immediate
