"""The pieces of a reduction that ``step()`` moves on: copies of the averaged tensors in
flat buffers of their own, cut into pieces of about ``CHUNK_BYTES``, and the pipeline that
starts the pieces' collectives and collects them from the training thread (Horovod runs one
collective at a time, and does not take collectives from two threads of a rank safely).

Used by the staged strategy (``hvd_hier.reduce.staged``: overlapped and two-stage
reductions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

import horovod.torch as hvd

from ..comm.collectives import wait
from . import CHUNK_BYTES
from .flat import plan_flat_layout

__all__ = ["Copy", "LevelCopies", "Pipeline", "allreduce", "plain_pieces", "compressed_pieces"]


class Copy:
    """The values of a list of tensors in flat buffers of their own (one per device and
    dtype, laid out as flat storage is), with a view per tensor of the same shape."""

    def __init__(self, tensors):
        tensors = list(tensors)
        self.views: List[torch.Tensor] = [torch.empty_like(t) for t in tensors]
        self.storages: List[torch.Tensor] = []
        for plan in plan_flat_layout(tensors, 1 << 62):
            storage = torch.zeros(plan.numel, dtype=plan.dtype, device=plan.device)
            for index, offset in plan.members:
                t = tensors[index]
                self.views[index] = storage.as_strided(t.shape, t.stride(), offset)
            self.storages.append(storage)

    def chunks(self) -> List[torch.Tensor]:
        """1-D slices of the buffers of at most ``CHUNK_BYTES`` each."""
        out = []
        for s in self.storages:
            step = max(1, CHUNK_BYTES // s.element_size())
            out.extend(s[i:i + step] for i in range(0, s.numel(), step))
        return out


@dataclass
class LevelCopies:
    """A staged level's copies of the averaged tensors, kept between its reductions."""

    snapshot: Copy  #: s, then (plain levels) the correction
    result: Optional[Copy] = None  #: r (levels with an anchor, or compressed)
    #: pooled piece buffers per (device, dtype)
    staging: Dict[tuple, List[torch.Tensor]] = field(default_factory=dict)


class Pipeline:
    """The pieces of one reduction, moved on by ``pump()`` from the training thread. A piece is a generator: it starts a collective and yields ``(handle, wait)``;
    once the handle is done it receives ``wait(handle)`` (the collective's output) and
    either yields the next collective or ends."""

    def __init__(self, pieces, budget: int = 1, most: int = 64):
        self.todo = list(pieces)  # generator functions, in order
        self.active: List[list] = []  # [generator, handle, wait]
        self.budget = max(1, budget)
        self.most = max(1, most)  # 1: one collective at a time (Horovod fuses none: exact sums)
        self.finished_since = 0
        self.batches = 0

    @property
    def done(self) -> bool:
        return not self.todo and not self.active

    def _advance(self, item, value=None, first=False) -> bool:
        """Run a piece to its next collective; False once it has ended."""
        try:
            item[1], item[2] = next(item[0]) if first else item[0].send(value)
            return True
        except StopIteration:
            self.finished_since += 1
            return False

    def _start_next(self) -> None:
        """Start the next piece: run it to its first collective."""
        item = [self.todo.pop(0)(), None, None]
        if self._advance(item, first=True):
            self.active.append(item)

    def _collect(self) -> None:
        still = []
        for item in self.active:
            alive = True
            while hvd.poll(item[1]):  # done: on to the piece's next collective, if any
                if not self._advance(item, item[2](item[1], None)):
                    alive = False
                    break
            if alive:
                still.append(item)
        self.active = still

    def pump(self, submit: bool) -> None:
        """Collect what has finished (no waiting); with ``submit``, start the next batch: one
        more than the last when nothing was left running (the link went idle), else as many
        as finished since the last batch (the batch outlasted the computation and delayed
        the collectives behind it)."""
        self._collect()
        if not submit:
            return
        if self.batches:  # (the first batch is the initial budget)
            if not self.active:
                self.budget = min(self.most, self.budget + 1)
            else:
                self.budget = max(1, min(self.most, self.finished_since))
        self.batches += 1
        self.finished_since = 0
        while self.todo and len(self.active) < self.budget:
            self._start_next()

    def drain(self, deadline: Optional[float]) -> None:
        """Run every piece to its end (``StallError`` past ``deadline``), a few at a time."""
        while not self.done:
            while self.todo and len(self.active) < min(2, self.most):
                self._start_next()
            if self.active:  # the oldest piece, one collective at a time
                item = self.active[0]
                if not self._advance(item, item[2](item[1], deadline)):
                    self.active.pop(0)


def allreduce(buffer: torch.Tensor, name: str, process_set):
    """Start Horovod's in-place sum of ``buffer``: what a piece yields."""
    return hvd.allreduce_async_(buffer, op=hvd.Sum, name=name, process_set=process_set), wait


def plain_pieces(red, copies: LevelCopies, into: Copy, correct: bool, route, tag: str):
    """The pieces of a plain (uncompressed) reduction over this rank's share of the chunks
    (``route``: ``hvd_hier.reduce.stages``). ``correct``: the snapshot becomes mean − s piece
    by piece through a staging buffer; else ``into`` (the snapshot itself, or the result
    copy, first filled with s) is summed in place and scaled into the mean."""
    snap, scale = copies.snapshot, red.scale
    if into is not snap:
        with torch.no_grad():
            for a, b in zip(into.storages, snap.storages):
                a.copy_(b)
    targets, sources = into.chunks(), snap.chunks()
    owned = route.owned(len(sources))
    red.items, red.owned = targets, owned
    process_set, _ = route.reducing()

    # (no torch.no_grad() across a yield: it would stay entered in the caller; these
    # buffers are the optimizer's own and need none)
    def piece(i):
        name = f"hvd_hier.{tag}.{i}"
        if not correct:
            yield allreduce(targets[i], name, process_set)
            targets[i].mul_(scale)
            return
        src = sources[i]
        pool = copies.staging.setdefault((src.device, src.dtype), [])
        buf = pool.pop() if pool else torch.empty(
            max(1, CHUNK_BYTES // src.element_size()), dtype=src.dtype, device=src.device)
        staged_piece = buf[:src.numel()]
        staged_piece.copy_(src)
        yield allreduce(staged_piece, name, process_set)
        staged_piece.mul_(scale)
        src.neg_()
        src.add_(staged_piece)
        pool.append(buf)

    return [lambda i=i: piece(i) for i in owned]


def compressed_pieces(red, reducer, snap: Copy, route, tag: str):
    """The pieces of a compressed reduction, one per bucket of this rank's share: its delta
    is encoded now; the piece runs the bucket's exchange (``DeltaReducer.steps``), whose
    result ``red.means`` keeps for the reducer's ``finish``."""
    owned = route.owned(len(reducer.buckets))
    encoded = {i: reducer.encode(i, snap.views) for i in owned}
    red.means = [None] * len(reducer.buckets)
    red.items, red.owned = red.means, owned
    process_set, members = route.reducing()
    rank = hvd.rank()

    def piece(i):
        red.means[i] = yield from reducer.steps(i, encoded[i], process_set, members, rank,
                                                red.scale, tag)

    return [lambda i=i: piece(i) for i in owned]
