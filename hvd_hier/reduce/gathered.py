"""A level's reduction of int4 or int2 deltas: every rank gathers every contribution.

A mean of 4- or 2-bit deltas encoded again would lose as much again, with no residual to
keep it. So each rank encodes its delta (with its residual, as ``DeltaReducer`` does), one
``allgather`` gives every rank the P encoded contributions in rank order, and the fused
``apply_sum`` decodes them, sums them in float32 in that order, scales by 1/n and writes
x = x̄ = x̄ + mean in one pass. Every rank sums the same bytes in the same order, so the group
ends bit-identical.

Bytes a rank sends per reduction, for N elements (E = ceil(N / 2048) records of R bytes: R =
1040 for int4, 528 for int2): Gloo's ring allgather forwards the P − 1 contributions of the
others, so (P − 1)·E·R (``exchange_factor``). For the two nodes of a two-stage level that is
E·R, as much as one alltoall and one allgather of the mean would send.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from ..config.codecs import TopK
from .codec import DeltaReducer, gathered

__all__ = ["GatheredDeltas", "TopkDeltas", "make_reducer"]


class GatheredDeltas(DeltaReducer):
    """One level's int4 or int2 reduction on this rank (arguments as ``DeltaReducer``)."""

    def steps(self, i: int, encoded: torch.Tensor, process_set, members: List[int],
              rank: int, scale: float, tag: str):
        """Bucket ``i``'s exchange as steps: the allgather of every rank's encoded delta,
        which it returns (``finish`` sums it)."""
        name = f"hvd_hier.{tag}.{self.codec}.{i}.gather"  # str(TopK): topk0.02_int2
        return (yield self.exchange.allgather(encoded, name, process_set), self.exchange.wait)

    def describe(self) -> str:
        return f"{self.codec} deltas, all gathered{self.feedback_note()}"

    def mean_bytes(self, i: int, count: int) -> int:
        return count * self.encoded_sizes[i]

    def finish(self, i: int, mean: torch.Tensor, table: Optional[Sequence[torch.Tensor]] = None,
               to_gradient: bool = False, scale: float = 1.0) -> None:
        """Sum bucket ``i``'s gathered contributions (``mean``: all of them, in rank order)
        times ``scale`` into ``table`` (default: the tensors): without ``to_gradient`` x = x̄ =
        x̄ + mean; with it x = −mean."""
        bucket = self.buckets[i]
        count = mean.numel() // self.encoded_sizes[i] if self.encoded_sizes[i] else 1
        xs = self._views(bucket, self.tensors if table is None else table)
        anchors = [] if to_gradient else self._views(bucket, self.anchor)
        with torch.no_grad():
            self._sum_into(mean, count, xs, anchors, -scale if to_gradient else scale)

    def _sum_into(self, src, count, xs, anchors, scale) -> None:
        self._ext.apply_sum(src, count, xs, anchors, self.codec, scale)


class TopkDeltas(GatheredDeltas):
    """One level's ``TopK`` reduction on this rank: each chunk's largest values of its delta
    (``encode_topk``), every rank's gathered and summed in rank order (``apply_topk``)."""

    def __init__(self, codec: TopK, *args, **kwargs):
        super().__init__(codec, *args, **kwargs)
        self.slots = self._ext.topk_slots(codec.fraction)

    def describe(self) -> str:
        return (f"top {self.codec.fraction:.3g} ({self.slots} of 2048) {self.codec.values} "
                f"deltas, all gathered{self.feedback_note()}")

    def _encode_into(self, xs, anchor, res, encoded) -> None:
        self._ext.encode_topk(xs, anchor, res, encoded, self.slots, self.codec.values)

    def _sum_into(self, src, count, xs, anchors, scale) -> None:
        self._ext.apply_topk(src, count, xs, anchors, self.slots, self.codec.values, scale)


def make_reducer(codec, tensors: Sequence[torch.Tensor], anchor: Sequence[torch.Tensor],
                 bucket_cap_bytes: int, exchange=None, error_feedback: bool = True) -> DeltaReducer:
    """The reducer of ``codec``: ``TopkDeltas`` for a TopK, ``GatheredDeltas`` for int4 and
    int2, else ``DeltaReducer`` (``error_feedback=False``: no residuals)."""
    cls = TopkDeltas if isinstance(codec, TopK) else \
        GatheredDeltas if gathered(codec) else DeltaReducer
    return cls(codec, tensors, anchor, bucket_cap_bytes, exchange, error_feedback)
