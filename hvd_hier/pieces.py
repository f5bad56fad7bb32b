"""The pieces of a reduction that ``step()`` moves on: copies of the averaged tensors in
flat buffers of their own, cut into pieces of about ``CHUNK_BYTES``, and the pipeline that
starts the pieces' collectives and collects them from the training thread (Horovod runs one
collective at a time, and does not take collectives from two threads of a rank safely).

Used by ``hvd_hier.overlap`` (overlapped and two-stage reductions).
"""

from __future__ import annotations

from typing import List, Optional

import torch

import horovod.torch as hvd

from .collectives import wait
from .flat import plan_flat_layout

__all__ = ["CHUNK_BYTES", "compressed_bucket_cap", "Copy", "Pipeline", "allreduce"]

CHUNK_BYTES = 2 << 20
"""Bytes one rank sends per collective of an overlapped reduction (one piece)."""


def compressed_bucket_cap(codec: str) -> int:
    """The bucket cap (in bytes of float32 elements) of an overlapped compressed level: a
    bucket whose encoded delta is about ``CHUNK_BYTES``."""
    from ._ext import extension

    ext = extension()
    bytes_per_element = ext.codec_record_bytes(codec) / ext.CODEC_CHUNK
    return int(CHUNK_BYTES / bytes_per_element * 4)


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
        self.nbytes = sum(s.numel() * s.element_size() for s in self.storages)

    def chunks(self) -> List[torch.Tensor]:
        """1-D slices of the buffers of at most ``CHUNK_BYTES`` each."""
        out = []
        for s in self.storages:
            step = max(1, CHUNK_BYTES // s.element_size())
            out.extend(s[i:i + step] for i in range(0, s.numel(), step))
        return out


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
