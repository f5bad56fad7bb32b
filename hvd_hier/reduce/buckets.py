"""Model averaging over a Horovod process set, bucket by bucket.

Tensors are cut into flat segments and grouped into buckets of at most ``bucket_cap_bytes``
(one dtype and device per bucket, at most ``MAX_TENSORS_PER_LAUNCH`` segments, so a bucket is
one kernel launch). For each bucket: the fused kernel packs its segments into a buffer,
Horovod sums the buffer across the process set asynchronously, and the fused kernel writes
``sum / n`` back. Buffers come from a small pool, so while bucket ``i`` is reduced the next
one is packed and the previous one unpacked, and the extra memory is at most
``max_in_flight`` buffers of one bucket each, never a copy of the whole model.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..comm.collectives import HorovodSum
from ..comm.extension import extension

__all__ = ["SUPPORTED_DTYPES", "flat_view", "Bucket", "plan_buckets", "Averager",
           "sum_in_flight", "BucketAverager"]

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _is_dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill a block of memory with no gap and no overlap."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def flat_view(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view of all of ``t``'s elements in memory order.

    Averaging is elementwise, so any dense layout works (channels_last included) as long as
    every rank has the same one. Raises ``ValueError`` for tensors with gaps or overlaps.
    """
    t = t.detach()
    if t.is_contiguous():
        return t.view(-1)
    if _is_dense(t):
        return t.as_strided((t.numel(),), (1,), t.storage_offset())
    raise ValueError(
        f"a tensor of shape {tuple(t.shape)} and strides {t.stride()} is neither contiguous "
        "nor dense; hvd_hier averages dense tensors only"
    )


@dataclass
class Bucket:
    """Segments ``(tensor index, first, last)`` of flat tensors, packed back to back."""

    dtype: torch.dtype
    device: torch.device
    segments: List[Tuple[int, int, int]] = field(default_factory=list)
    numel: int = 0

    @property
    def key(self):
        return (self.device, self.dtype)

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=self.dtype).element_size()


def plan_buckets(tensors: Sequence[torch.Tensor], bucket_cap_bytes: int,
                 max_segments: int) -> List[Bucket]:
    """Cut ``tensors`` into buckets of at most ``bucket_cap_bytes`` and ``max_segments`` pieces.

    Buckets keep the tensors' order within each (device, dtype); a tensor larger than the cap
    is split across buckets, so no bucket exceeds the cap (except that every bucket holds at
    least one element). Empty tensors are skipped.
    """
    open_buckets: Dict[tuple, Bucket] = {}
    done: List[Bucket] = []
    for index, t in enumerate(tensors):
        n = t.numel()
        if n == 0:
            continue
        key = (t.device, t.dtype)
        cap = max(1, bucket_cap_bytes // t.element_size())
        first = 0
        while first < n:
            bucket = open_buckets.get(key)
            if bucket is None:
                bucket = open_buckets[key] = Bucket(t.dtype, t.device)
            take = min(n - first, cap - bucket.numel)
            bucket.segments.append((index, first, first + take))
            bucket.numel += take
            first += take
            if bucket.numel >= cap or len(bucket.segments) >= max_segments:
                done.append(open_buckets.pop(key))
    done.extend(open_buckets.values())
    return done


class Averager:
    """What both averagers offer the optimizer (``BucketAverager``: packed buckets;
    ``FlatAverager``: persistent flat storage):

    * ``tensors``: the averaged tensors, in order; ``nbytes``: the bytes one averaging reduces;
    * ``average(process_set, size, tag, deadline)``: average every tensor in place over the
      ``size`` ranks of ``process_set`` through ``collective``; returns the bytes reduced;
    * ``memory_passes(scale)``: the memory side of an averaging without communication
      (benchmarks); ``pool_bytes()``: extra memory held now.
    """

    tensors: List[torch.Tensor]
    nbytes: int
    collective: object

    def average(self, process_set, size: int, tag: str, deadline: Optional[float] = None) -> int:
        raise NotImplementedError

    def memory_passes(self, scale: float) -> None:
        raise NotImplementedError

    def pool_bytes(self) -> int:
        raise NotImplementedError


def sum_in_flight(buckets, start, process_set, tag: str, max_in_flight: int,
                   deadline: Optional[float] = None, collective=None) -> None:
    """Sum one buffer per bucket over ``process_set`` in place, at most ``max_in_flight`` at
    once: ``start(bucket)`` returns ``(buffer, done)``, and ``done()`` runs once that buffer's
    sum has arrived. The oldest reduction is finished before the next bucket is started, so
    at most ``max_in_flight`` buffers are in use. Past ``deadline`` (``time.monotonic()``),
    ``StallError``.

    Horovod matches collectives by name across ranks, so names depend only on ``tag`` and
    the bucket index, never on how many averagers a rank has created. ``collective``:
    see ``HorovodSum`` (the default).
    """
    collective = collective if collective is not None else HorovodSum()
    pending = collections.deque()

    def finish():
        handle, done = pending.popleft()
        collective.wait(handle, deadline)
        done()

    with torch.no_grad():
        for i, bucket in enumerate(buckets):
            if len(pending) >= max_in_flight:
                finish()
            buf, done = start(bucket)
            handle = collective.start(buf, f"hvd_hier.{tag}.{i}", process_set)
            pending.append((handle, done))
        while pending:
            finish()


class BucketAverager(Averager):
    """Averages a fixed list of tensors in place over a process set.

    Args:
        tensors: the tensors to average (parameters, buffers); all of a supported dtype.
        bucket_cap_bytes: the largest bucket.
        max_in_flight: buckets reduced at once (their buffers are the extra memory). Horovod
            may fuse buckets that are in flight together into one reduction, depending on
            timing, and a ring of 3 or more ranks then adds in another order; with 1, every
            sum is reproducible bit for bit.
        collective: what sums a buffer over the process set; ``HorovodSum()`` by default.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], bucket_cap_bytes: int,
                 max_in_flight: int = 2, collective=None):
        self.collective = collective if collective is not None else HorovodSum()
        self.tensors = list(tensors)
        for t in self.tensors:
            if t.dtype not in SUPPORTED_DTYPES:
                raise ValueError(f"cannot average a tensor of dtype {t.dtype}")
        ext = extension()
        self._ext = ext
        self.buckets = plan_buckets(self.tensors, bucket_cap_bytes, ext.MAX_TENSORS_PER_LAUNCH)
        self.max_in_flight = max(1, int(max_in_flight))
        self._largest: Dict[tuple, int] = {}
        for b in self.buckets:
            self._largest[b.key] = max(self._largest.get(b.key, 0), b.numel)
        self._pool: Dict[tuple, List[torch.Tensor]] = collections.defaultdict(list)
        self.nbytes = sum(b.nbytes for b in self.buckets)

    def _segments(self, bucket: Bucket, table: Optional[Sequence[torch.Tensor]] = None
                  ) -> List[torch.Tensor]:
        table = self.tensors if table is None else table
        return [flat_view(table[index])[first:last] for index, first, last in bucket.segments]

    def _buffer(self, bucket: Bucket) -> torch.Tensor:
        pool = self._pool[bucket.key]
        base = pool.pop() if pool else torch.empty(
            self._largest[bucket.key], dtype=bucket.dtype, device=bucket.device)
        return base

    def pool_bytes(self) -> int:
        """Bytes held by the buffer pool now (the extra memory of an averaging)."""
        return sum(b.numel() * b.element_size() for bufs in self._pool.values() for b in bufs)

    def memory_passes(self, scale: float) -> None:
        """Pack and unpack every bucket with no communication in between: the memory side of
        an averaging (what the benchmarks measure). Multiplies every tensor by ``scale``."""
        ext = self._ext
        with torch.no_grad():
            for bucket in self.buckets:
                base = self._buffer(bucket)
                views = self._segments(bucket)
                ext.pack(views, base[: bucket.numel])
                ext.unpack(base[: bucket.numel], views, scale)
                self._pool[bucket.key].append(base)

    def average(self, process_set, size: int, tag: str, deadline: Optional[float] = None) -> int:
        """Average every tensor over ``process_set`` (``size`` ranks). Returns bytes reduced."""
        if size <= 1:
            return 0
        return self.reduce(process_set, tag, 1.0, 1.0 / size, deadline)

    def reduce(self, process_set, tag: str, prescale: float, postscale: float,
               deadline: Optional[float] = None,
               tensors: Optional[Sequence[torch.Tensor]] = None) -> int:
        """Sum ``prescale * x`` over ``process_set`` and write ``postscale`` times the sum back
        into every tensor. ``tensors`` replaces the planned tensors for this call (each of the
        same number of elements, dtype and device: the gradients of the planned parameters,
        say). Returns bytes reduced."""
        if not self.buckets:
            return 0
        if tensors is not None:
            tensors = list(tensors)
            if [(t.numel(), t.dtype, t.device) for t in tensors] != \
                    [(t.numel(), t.dtype, t.device) for t in self.tensors]:
                raise ValueError("the tensors to reduce differ from the planned ones")
        ext = self._ext

        def start(bucket):  # pack (scaled) into a pooled buffer; after the sum, unpack
            base = self._buffer(bucket)
            views = self._segments(bucket, tensors)
            ext.pack(views, base[: bucket.numel], prescale)

            def done():
                ext.unpack(base[: bucket.numel], views, postscale)
                self._pool[bucket.key].append(base)

            return base[: bucket.numel], done

        sum_in_flight(self.buckets, start, process_set, tag, self.max_in_flight, deadline,
                       self.collective)
        return self.nbytes

