"""Persistent flat storage: the averaged tensors become views into a few preallocated
buffers, which an averaging reduces in place (no packing, no extra memory)."""

from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..comm.collectives import HorovodSum
from .buckets import SUPPORTED_DTYPES, Averager, flat_view, sum_in_flight

__all__ = ["FLAT_ALIGN_BYTES", "FlatPlan", "plan_flat_layout", "FlatBucket", "check_no_aliasing",
           "FlatAverager"]


FLAT_ALIGN_BYTES = 64
"""Every tensor in flat storage starts on a 64-byte boundary (a cache line; enough for any
vector load), so the storage holds a few bytes of zero padding between tensors."""


@dataclass
class FlatBucket:
    """One preallocated buffer of flat storage and the tensors that are views into it."""

    storage: torch.Tensor
    members: List[Tuple[int, int]] = field(default_factory=list)  # (tensor index, offset)

    @property
    def key(self):
        return (self.storage.device, self.storage.dtype)

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()


def _align(n: int, element_size: int) -> int:
    step = max(1, FLAT_ALIGN_BYTES // element_size)
    return -(-n // step) * step


@dataclass(frozen=True)
class FlatPlan:
    """One buffer of flat storage: its device, dtype and size in elements, and the tensors
    it holds as ``(tensor index, element offset)``."""

    device: torch.device
    dtype: torch.dtype
    numel: int
    members: Tuple[Tuple[int, int], ...]


def plan_flat_layout(tensors: Sequence[torch.Tensor], bucket_cap_bytes: int) -> List[FlatPlan]:
    """The buffers of flat storage for ``tensors``: per (device, dtype), in order, each tensor
    at an offset aligned to ``FLAT_ALIGN_BYTES``, a new buffer whenever the next tensor would
    pass ``bucket_cap_bytes`` (a larger tensor gets a buffer of its own). Empty tensors get no
    slot. Buffers are listed by (device, dtype) of first appearance, then in order."""
    plans: Dict[tuple, List[Tuple[List[Tuple[int, int]], int]]] = {}
    for index, t in enumerate(tensors):
        if t.numel() == 0:
            continue
        key = (t.device, t.dtype)
        buckets = plans.setdefault(key, [])
        cap = max(1, bucket_cap_bytes // t.element_size())
        if buckets:
            members, used = buckets[-1]
            start = _align(used, t.element_size())
            if start + t.numel() <= cap:
                members.append((index, start))
                buckets[-1] = (members, start + t.numel())
                continue
        buckets.append(([(index, 0)], t.numel()))
    return [FlatPlan(device, dtype, used, tuple(members))
            for (device, dtype), buckets in plans.items() for members, used in buckets]


def check_no_aliasing(tensors: Sequence[torch.Tensor], names: Sequence[str]) -> None:
    """Raise if two of ``tensors`` share memory (tied weights): moving them into separate
    slots of flat storage would untie them."""
    spans = collections.defaultdict(list)
    for i, t in enumerate(tensors):
        if t.numel() == 0:
            continue
        start = t.data_ptr()
        spans[t.untyped_storage().data_ptr()].append((start, start + t.numel() * t.element_size(), i))
    for items in spans.values():
        items.sort()
        for (s0, e0, i), (s1, e1, j) in zip(items, items[1:]):
            if s1 < e0:
                raise ValueError(
                    f"flat_storage=True: {names[i]} and {names[j]} share memory (tied "
                    "weights); flat storage would untie them, so pass flat_storage=False")


class FlatAverager(Averager):
    """Persistent flat storage: the tensors become views into a few preallocated buffers.

    At construction every tensor's values are copied once into a buffer of its (device,
    dtype), and its ``.data`` is re-pointed at that slot: the tensor objects stay the same
    (so ``optimizer.param_groups``, ``model.parameters()`` and the user's references keep
    working), only their memory moves. Tensors are laid out in order, each on a 64-byte
    boundary, in buffers of at most ``bucket_cap_bytes`` (a tensor larger than that gets a
    buffer of its own). An averaging is then an in-place allreduce of each buffer followed
    by an in-place scale by 1/n: no packing, no unpacking, no extra memory.

    Before each averaging the views are checked; a tensor whose ``.data`` was re-assigned
    (e.g. by ``model.to()``) with the same shape, dtype and device is copied back into its
    slot and re-pointed, with a warning; any other change raises ``ValueError``.

    Args:
        tensors: the tensors to average (parameters, buffers); dense, of a supported dtype.
        bucket_cap_bytes: the largest buffer (unless one tensor is larger).
        max_in_flight: buffers reduced at once (1: reproducible sums, see BucketAverager).
        names: labels of the tensors for error messages.
        collective: what sums a buffer over the process set; ``HorovodSum()`` by default.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], bucket_cap_bytes: int,
                 max_in_flight: int = 2, names: Sequence[str] = None, collective=None):
        self.collective = collective if collective is not None else HorovodSum()
        self.tensors = list(tensors)
        self.names = list(names) if names is not None else [f"tensor {i}" for i in range(len(self.tensors))]
        for t, name in zip(self.tensors, self.names):
            if t.dtype not in SUPPORTED_DTYPES:
                raise ValueError(f"cannot average {name}: dtype {t.dtype}")
            flat_view(t)  # dense, or a clear error
        check_no_aliasing(self.tensors, self.names)
        self.max_in_flight = max(1, int(max_in_flight))
        self.buckets: List[FlatBucket] = []
        # per tensor: its bucket, offset, and what it looked like when moved there
        self._slots: List[Tuple[FlatBucket, int, tuple]] = [None] * len(self.tensors)
        for plan in plan_flat_layout(self.tensors, bucket_cap_bytes):
            # one buffer at a time: the old tensors' memory is released as they move
            storage = torch.zeros(plan.numel, dtype=plan.dtype, device=plan.device)
            bucket = FlatBucket(storage, list(plan.members))
            with torch.no_grad():
                for index, offset in plan.members:
                    self._move(index, bucket, offset, self.tensors[index])
            self.buckets.append(bucket)
        self.nbytes = sum(b.nbytes for b in self.buckets)

    def _move(self, index: int, bucket: FlatBucket, offset: int, values: torch.Tensor) -> None:
        t = self.tensors[index]
        view = bucket.storage.as_strided(t.shape, t.stride(), offset)
        view.copy_(values)
        t.data = view
        self._slots[index] = (bucket, offset, (t.data_ptr(), tuple(t.shape), tuple(t.stride()),
                                               t.dtype, t.device))

    def relink(self) -> int:
        """Re-point tensors whose ``.data`` was re-assigned; returns how many moved back."""
        moved = 0
        for index, t in enumerate(self.tensors):
            slot = self._slots[index]
            if slot is None:
                continue
            bucket, offset, (ptr, shape, stride, dtype, device) = slot
            if t.data_ptr() == ptr and tuple(t.shape) == shape and tuple(t.stride()) == stride \
                    and t.dtype == dtype:
                continue
            name = self.names[index]
            if tuple(t.shape) != shape or t.dtype != dtype or t.device != device:
                raise ValueError(
                    f"flat_storage=True: {name} changed from shape {shape}, {dtype} on {device} "
                    f"to shape {tuple(t.shape)}, {t.dtype} on {t.device} after the optimizer was "
                    "created; create the optimizer after moving or converting the model")
            warnings.warn(
                f"hvd_hier: {name} no longer uses its flat storage (its .data was re-assigned); "
                "its values are copied back into the storage")
            with torch.no_grad():
                self._move(index, bucket, offset, t.detach().clone())
            moved += 1
        return moved

    def pool_bytes(self) -> int:
        """Extra memory held besides the tensors themselves: none."""
        return 0

    def memory_passes(self, scale: float) -> None:
        """The memory side of an averaging without communication: scale every buffer in place."""
        with torch.no_grad():
            for bucket in self.buckets:
                bucket.storage.mul_(scale)

    def average(self, process_set, size: int, tag: str, deadline: Optional[float] = None) -> int:
        """Average every tensor over ``process_set`` (``size`` ranks). Returns bytes reduced
        (the buffers' size, padding included)."""
        if size <= 1 or not self.buckets:
            return 0
        self.relink()
        scale = 1.0 / size

        def start(bucket):  # the buffer is the tensors' memory: sum it in place, then scale
            return bucket.storage, lambda: bucket.storage.mul_(scale)

        sum_in_flight(self.buckets, start, process_set, f"{tag}.flat", self.max_in_flight,
                       deadline, self.collective)
        return self.nbytes
