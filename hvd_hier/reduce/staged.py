"""The staged strategy: a reduction in pieces, in one stage or two, now or behind training.

A level reduces through this strategy when it overlaps (``overlap_steps=D`` >= 1) or reduces
in two stages (``hvd_hier.reduce.stages``), with plain or compressed values.

At a step t where such a level reduces, the level below it first averages within its own
groups (as if it were due; for the innermost level each rank is its own group), which leaves
every rank with a snapshot s of the averaged tensors, the same on every rank of the group
below. s is copied into buffers of the level's own, the non-finite check runs on it, and its
reduction over the level's group (plain, compressed and with the outer optimizer, as the
level says) runs while training goes on. At the end of step t + D, after that step's update
and its own averaging (if any), every rank adds the correction c = r − s to its parameters
and buffers, where r is the level's result: the group's mean, or the outer optimizer's new
anchor (``apply_correction``). It adds c to the anchors of the levels below as well, so they
stand where the non-overlapped reduction would have put them, with the progress made since.
c is the same on every rank of the group below, so it commutes with their averagings in
between. A rank whose values were left out (``nonfinite="skip"``) takes r instead. With
D = 0 (two stages, not overlapped) the check runs on the tensors themselves, the groups below
take their plain mean, and the tensors take r at once.

How it runs behind training: Horovod performs its collectives one at a time on its own
background thread, so a reduction submitted whole would hold back every other collective
(the level below's averagings) until it ended; and Horovod does not take collectives from two
threads of a rank safely (seen here: ranks stall in Gloo). So the reduction is cut into
pieces of about ``CHUNK_BYTES`` on the wire (a compressed level: one bucket's alltoall and
allgather), and ``step()`` itself moves them on at each call (``poll``), on the training
thread: the pipeline (``hvd_hier.reduce.pieces.Pipeline``) collects the pieces that have
finished, and after the step's own averaging submits the next batch, so that the link stays
busy during the computation and a lower level's averaging waits behind few pieces.

Memory: one copy of the averaged tensors per staged level, kept between reductions (the
snapshot, which becomes the correction); a level with ``outer`` and no compression keeps a
second one (its mean), a compressed level the encoded deltas and means, and a compressed
level with the outer optimizer a second copy while the reduction finishes.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from .pieces import Pipeline, compressed_pieces, plain_pieces
from .stages import OneStage, TwoStage
from .strategy import InFlight, Strategy, stopwatch

__all__ = ["Staged", "apply_correction", "nonempty"]


def nonempty(views, tensors):
    """The pairs of ``views`` and ``tensors`` (detached) whose tensor has elements."""
    pairs = [(v, t) for v, t in zip(views, tensors) if t.numel()]
    return [v for v, _ in pairs], [t.detach() for _, t in pairs]


class Staged(Strategy):
    """A reduction in pieces (see the module's docstring): ``overlap`` steps behind training
    (0: finished at once), ``compressed`` deltas or plain values, over one stage or two."""

    def __init__(self, level, ctx, below: Sequence, overlap: int, compressed: bool):
        super().__init__(level, ctx, below)
        self.overlap, self.compressed = overlap, compressed
        lt = level.topology
        self.route = TwoStage(lt) if lt.cross_set is not None else OneStage(lt)

    def describe(self) -> str:
        parts = [self.route.describe(),
                 self.level.reducer.describe() if self.compressed
                 else "plain average in pieces",
                 f"overlap {self.overlap}" if self.overlap else None]
        return ", ".join(p for p in parts if p)

    def start(self, t: int, deadline: Optional[float]) -> Optional[InFlight]:
        level, elapsed = self.level, stopwatch()
        red = InFlight(level.index, t, t + self.overlap)
        divisor = self._first_stage(red, t, deadline)
        copies = level.copies(with_result=(level.anchor is not None and self.overlap > 0)
                              or self.compressed)
        snap = copies.snapshot
        views, tensors = nonempty(snap.views, self.ctx.averager.tensors)
        with torch.no_grad():
            torch._foreach_copy_(views, tensors)
        if self.overlap and len(level.topology.group) > 1:
            divisor, red.dropped = self.check(t, deadline, snap.views)
        red.scale = self.route.factor / divisor
        pieces, moved = self._pieces(red, copies, f"{level.tag}.staged")
        if pieces:
            # deterministic: one piece at a time, so that Horovod never fuses two (a ring of
            # 3 or more ranks would then add in another order)
            red.pipeline = Pipeline(pieces, most=1 if self.ctx.deterministic else 64)
            red.pipeline.pump(submit=True)
        level.stats.add(moved, elapsed())
        if self.overlap:
            level.in_flight.append(red)
            return red
        self.finish(red, deadline)  # (counts its own time)
        elapsed = stopwatch()
        apply_correction(self.ctx, red, self.below)
        self.restart_below()
        level.stats.seconds += elapsed()
        return None

    def _first_stage(self, red: InFlight, t: int, deadline: Optional[float]) -> int:
        """Before the snapshot: overlapped, the level below averages (as if due); not
        overlapped, the check on the tensors, then the groups below take their plain mean
        (neither for a fragment: the level below averaged already, ``Context.lower_done``).
        Returns the divisor so far (the group's size, or the finite ranks)."""
        divisor, done = len(self.level.topology.group), self.ctx.lower_done
        if self.overlap:
            if self.below and not done:
                self.below[-1].immediate.start(t, deadline)
            self.ctx.relink()
            return divisor
        self.ctx.relink()
        divisor, red.dropped = self.check(t, deadline)
        if not done:
            lower = self.below[-1].topology
            self.ctx.averager.average(lower.process_set, len(lower.group),
                                      f"{self.level.tag}.staged.lower", deadline)
        return divisor

    def _pieces(self, red: InFlight, copies, tag: str):
        """(pieces, payload bytes) of this rank's share; the payload is counted as a
        reduction in one stage counts it."""
        level = self.level
        if self.compressed:
            return (compressed_pieces(red, level.reducer, copies.snapshot, self.route, tag),
                    level.reducer.nbytes)
        if len(level.topology.group) == 1:
            return [], 0
        # the sums go into: a copy of s beside it (an anchor needs both), or s itself, which
        # becomes the mean (no overlap), or mean − s (overlapped, no anchor)
        anchor, d = level.anchor, self.overlap
        into = copies.result if anchor is not None and d else copies.snapshot
        return (plain_pieces(red, copies, into, correct=(anchor is None and d > 0),
                             route=self.route, tag=tag), self.ctx.averager.nbytes)

    def poll(self, red: InFlight, submit: bool) -> None:
        """At a step boundary: collect the pieces that finished; with ``submit``, start the
        next batch (``Pipeline.pump``)."""
        if red.pipeline is not None:
            elapsed = stopwatch()
            red.pipeline.pump(submit)
            self.level.stats.seconds += elapsed()

    def finish(self, red: InFlight, deadline: Optional[float]) -> None:
        """Wait for ``red``'s pieces (``StallError`` past ``deadline``), gather the shares of
        two stages, and compute the correction (not overlapped: the result itself); the
        level's anchor and outer optimizer move now."""
        if not red.running:
            return
        elapsed = stopwatch()
        if red.pipeline is not None:
            red.pipeline.drain(deadline)
            red.pipeline = None
        copies = self.level.copies(with_result=False)
        if red.items is not None:
            self.route.gather(red, self._sizes(red), self._lower_set(),
                              copies.snapshot.storages[0].device, deadline)
        overlapped = red.due > red.start
        with torch.no_grad():
            red.correction = self._correction(red, copies, overlapped)
        if not overlapped:
            red.dropped = True  # the tensors take the result itself
        red.means = red.items = None
        self.level.stats.seconds += elapsed()

    def _correction(self, red: InFlight, copies, overlapped: bool) -> List[torch.Tensor]:
        """c = r − s (or, not overlapped or dropped, r) in the level's copies."""
        level = self.level
        snap, anchor = copies.snapshot, level.anchor
        if anchor is None:
            if len(level.topology.group) == 1:  # its own mean: no correction
                for s in snap.storages:
                    s.zero_()
            return snap.views  # mean − s, or (not overlapped) the mean
        result = copies.result if overlapped or self.compressed else snap
        if self.compressed:
            for i, mean in enumerate(red.means):
                level.reducer.finish(i, mean, result.views, to_gradient=anchor.outer is not None,
                                     scale=red.scale)
            if anchor.outer is not None:
                anchor.outer_step(pseudo_gradient=True, tensors=result.views)
        else:
            if len(level.topology.group) == 1 and result is not snap:
                for a, b in zip(result.storages, snap.storages):
                    a.copy_(b)
            anchor.after_mean(tensors=result.views)
        if overlapped and not red.dropped:  # c = r − s
            for a, b in zip(result.storages, snap.storages):
                a.sub_(b)
        return result.views

    def _sizes(self, red: InFlight) -> List[int]:
        if red.means is not None:
            count = len(self.route.reducing()[1])
            return [self.level.reducer.mean_bytes(i, count) for i in range(len(red.means))]
        return [c.numel() * c.element_size() for c in red.items]

    def _lower_set(self):
        return self.below[-1].topology.process_set if self.below else None


def apply_correction(ctx, red: InFlight, below: Sequence) -> None:
    """Add ``red``'s correction (or with ``dropped``, copy it) into the averaged tensors and
    into the taken anchors of the levels ``below`` it."""
    ctx.relink()
    targets = [list(ctx.averager.tensors)] + [
        ctx.pick(lv.anchor.anchor) for lv in below if lv.anchor is not None and lv.anchor.taken]
    with torch.no_grad():
        for table in targets:
            views, tensors = nonempty(red.correction, table)
            if not views:
                continue
            if red.dropped:
                torch._foreach_copy_(tensors, views)
            else:
                torch._foreach_add_(tensors, views)
