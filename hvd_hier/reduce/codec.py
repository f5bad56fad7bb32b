"""A level's reduction of compressed deltas.

What is reduced is the delta d = x − x̄ from the level's anchor (plus, for the integer codecs,
this rank's error residual), encoded by the fused kernel ``encode_delta`` in one pass:
``"fp16"`` and ``"bf16"`` cast it; ``"int8"``, ``"int4"`` and ``"int2"`` quantise it with one
float32 scale per chunk of ``CODEC_CHUNK`` elements and keep what the quantisation lost in a
float32 residual that is added to the next delta of that level on this rank (error feedback).
csrc/codec.h defines the bytes and the rounding.

This module's ``DeltaReducer`` reduces fp16, bf16 and int8 deltas as follows; int4 and int2
deltas are too coarse to encode the mean again, and go through ``GatheredDeltas``
(``hvd_hier.reduce.gathered``): every rank receives every contribution and sums them.

Horovod's CPU operations do not sum bfloat16, and int8 sums overflow, so the encoded bytes are
never summed by Horovod. Each bucket's records are cut into P contiguous shards (P: the
group's size); one ``alltoall`` sends shard k of every rank to rank k, which decodes the P
contributions, sums them in float32 in rank order, scales by 1/n and encodes the mean again
(``reduce_encoded``); one ``allgather`` then gives every rank every encoded shard of the
mean, and ``apply_delta`` writes x = x̄ + mean and x̄ = x in one pass. Every rank decodes the
same bytes, so the group ends bit-identical; the parameters keep their dtype.

Bytes a rank sends per reduction, for N elements (E = ceil(N / 2048) records of R bytes: R =
4096 for fp16 and bf16, 2064 for int8, a 16-byte header holding the scale): the alltoall
sends E·R·(P − 1)/P and the allgather E·R·(P − 1)/P (Gloo's ring: each rank forwards the P −
1 shards it does not own), so 2·(P − 1)/P·E·R, against 2·(P − 1)/P·4N for float32
(``link_bytes``). With shards of unequal record counts the exact figure differs by at most
one record per peer.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from ..comm.collectives import wait
from ..comm.extension import extension
from ..config.codecs import ERROR_FEEDBACK, GATHERED, TopK, feeds_back, gathered
from ..config.levels import CODECS
from . import CHUNK_BYTES
from .buckets import flat_view, plan_buckets

__all__ = ["CODECS", "GATHERED", "ERROR_FEEDBACK", "gathered", "encoded_bytes", "shard_records",
           "exchange_factor",
           "link_bytes", "piece_bucket_cap", "HorovodExchange", "DeltaReducer", "run_steps"]

def encoded_bytes(codec, numel: int) -> int:
    """Bytes of one rank's encoding of ``numel`` elements in ``codec`` (a name or a TopK)."""
    ext = extension()
    if isinstance(codec, TopK):
        return ext.topk_encoded_bytes(numel, ext.topk_slots(codec.fraction), codec.values)
    return ext.encoded_bytes(codec, numel)


def shard_records(records: int, parts: int) -> List[int]:
    """Records per shard when ``records`` are cut into ``parts`` contiguous shards: sizes
    differ by at most one, the larger ones first."""
    base, extra = divmod(records, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]


def exchange_factor(codec: Optional[str], group: int) -> float:
    """Bytes one rank sends per byte of its contribution, in a reduction over ``group`` ranks:
    2(P − 1)/P for a ring allreduce (``codec=None``) and for the alltoall and allgather of
    ``DeltaReducer``; P − 1 for the allgather of every contribution (``GATHERED``)."""
    if group <= 1:
        return 0.0
    return float(group - 1) if gathered(codec) else 2 * (group - 1) / group


def link_bytes(codec: Optional[str], numel: int, group: int) -> float:
    """Bytes one rank sends per reduction of ``numel`` elements over ``group`` ranks: the
    formula of the module's docstring (``codec=None``: a float32 ring allreduce)."""
    payload = 4 * numel if codec is None else encoded_bytes(codec, numel)
    return exchange_factor(codec, group) * payload


def run_steps(steps, deadline: Optional[float]):
    """Drive an exchange's steps (a generator that yields ``(handle, wait)`` and is sent
    ``wait(handle, deadline)``) to the end; returns its value."""
    try:
        handle, wait_for = next(steps)
        while True:
            handle, wait_for = steps.send(wait_for(handle, deadline))
    except StopIteration as stop:
        return stop.value


def piece_bucket_cap(codec: str) -> int:
    """The bucket cap (in bytes of float32 elements) of an overlapped compressed level: a
    bucket whose encoded delta is about ``CHUNK_BYTES``, one piece of the reduction."""
    ext = extension()
    bytes_per_element = encoded_bytes(codec, ext.CODEC_CHUNK) / ext.CODEC_CHUNK
    return int(CHUNK_BYTES / bytes_per_element * 4)


class HorovodExchange:
    """The two collectives of a compressed reduction, through Horovod: ``alltoall(buffer,
    splits, name, process_set)`` and ``allgather(buffer, name, process_set)`` start one and
    return a handle; ``wait(handle, deadline)`` returns its output (``StallError`` past the
    deadline)."""

    def alltoall(self, buffer: torch.Tensor, splits: List[int], name: str, process_set):
        import horovod.torch as hvd

        return hvd.alltoall_async(buffer, splits=torch.tensor(splits, dtype=torch.int32),
                                  name=name, process_set=process_set)

    def allgather(self, buffer: torch.Tensor, name: str, process_set):
        import horovod.torch as hvd

        return hvd.allgather_async(buffer, name=name, process_set=process_set)

    def wait(self, handle, deadline: Optional[float]):
        out = wait(handle, deadline)
        return out[0] if isinstance(out, tuple) else out  # alltoall: (output, splits)


class DeltaReducer:
    """One level's compressed reduction on this rank (``make_reducer`` picks this class or
    ``GatheredDeltas`` by codec).

    Args:
        codec: one of ``CODECS``.
        tensors: the averaged tensors (parameters, then buffers).
        anchor: the level's anchor, one tensor per tensor (same shapes and dtypes).
        bucket_cap_bytes: the largest bucket of tensor elements.
        exchange: the collectives (``HorovodExchange()`` by default).
        error_feedback: keep residuals (the integer codecs and TopK); False drops what the
            encoding lost.
    """

    def __init__(self, codec: str, tensors: Sequence[torch.Tensor],
                 anchor: Sequence[torch.Tensor], bucket_cap_bytes: int, exchange=None,
                 error_feedback: bool = True):
        if not isinstance(codec, TopK) and codec not in CODECS:
            raise ValueError(f"compression must be one of {', '.join(CODECS)}, a TopK, got "
                             f"{codec!r}")
        ext = extension()
        self._ext = ext
        self.codec = codec
        self.tensors, self.anchor = list(tensors), list(anchor)
        self.exchange = exchange if exchange is not None else HorovodExchange()
        # what quantisation lost, added to this rank's next delta of the level
        self.residuals = ([torch.zeros(t.shape, dtype=torch.float32, device=t.device)
                           for t in self.tensors]
                          if error_feedback and feeds_back(codec) else [])
        self.buckets = plan_buckets(self.tensors, bucket_cap_bytes,
                                    ext.MAX_TENSORS_PER_DELTA_LAUNCH)
        self.record_bytes = encoded_bytes(codec, ext.CODEC_CHUNK)
        #: each bucket's encoded bytes, and their sum (one rank's contribution)
        self.encoded_sizes = [encoded_bytes(codec, b.numel) for b in self.buckets]
        self.nbytes = sum(self.encoded_sizes)

    def _views(self, bucket, table):
        return [flat_view(table[i])[first:last] for i, first, last in bucket.segments]

    def drop_contribution(self, table: Optional[Sequence[torch.Tensor]] = None) -> None:
        """This rank contributes a zero delta to the next reduction (its values are
        non-finite): x := x̄ (``table``: the copy of the tensors that will be encoded, if not
        the tensors) and its residual := 0."""
        with torch.no_grad():
            torch._foreach_copy_(self.tensors if table is None else list(table), self.anchor)
            if self.residuals:
                torch._foreach_zero_(self.residuals)

    def reset_residuals(self) -> None:
        if self.residuals:
            with torch.no_grad():
                torch._foreach_zero_(self.residuals)

    def reduce(self, process_set, members: List[int], rank: int, divisor: int, tag: str,
               deadline: Optional[float] = None, to_gradient: bool = False) -> int:
        """Reduce the deltas over ``members`` (global ranks of ``process_set``; ``rank`` is
        this one) and divide by ``divisor``. Without ``to_gradient``: x = x̄ = x̄ + mean. With
        it: every tensor := −mean (the outer optimizer's pseudo-gradient x̄ − ḡ), the anchor
        untouched. Returns the encoded bytes of one rank's contribution. Bucket by bucket, so
        that one bucket's encoded buffers are the only extra memory."""
        scale = 1.0 / divisor
        with torch.no_grad():
            for i in range(len(self.buckets)):
                steps = self.steps(i, self.encode(i), process_set, members, rank, scale, tag)
                self.finish(i, run_steps(steps, deadline), to_gradient=to_gradient, scale=scale)
        return self.nbytes

    def steps(self, i: int, encoded: torch.Tensor, process_set, members: List[int],
              rank: int, scale: float, tag: str):
        """Bucket ``i``'s exchange, as steps (``run_steps``; the overlapped reduction runs
        them apart): the alltoall, this rank's shard of the sum times ``scale``, the
        allgather of the encoded mean, which it returns."""
        splits, handle = self.start_exchange(i, encoded, process_set, members, tag)
        received = yield handle, self.exchange.wait
        mine = self.reduce_shard(received, splits, members, rank, scale)
        return (yield self.start_gather(i, mine, process_set, tag), self.exchange.wait)

    def describe(self) -> str:
        return f"{self.codec} deltas{self.feedback_note()}"

    def feedback_note(self) -> str:
        """", without error feedback" where the codec could keep residuals and does not."""
        return ", without error feedback" if feeds_back(self.codec) and not self.residuals \
            else ""

    def _encode_into(self, xs, anchor, res, encoded) -> None:
        self._ext.encode_delta(xs, anchor, res, encoded, self.codec)

    def mean_bytes(self, i: int, count: int) -> int:
        """Bytes of what bucket ``i``'s exchange over ``count`` ranks returns."""
        return self.encoded_sizes[i]

    # -- the three phases of one bucket (the overlapped reduction runs them apart) ----------
    def encode(self, i: int, table: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """Bucket ``i``'s encoded delta ``table`` − anchor (``table``: the tensors, or a copy of
        them of the same shapes), with this rank's residuals (updated)."""
        bucket = self.buckets[i]
        table = self.tensors if table is None else table
        res = self._views(bucket, self.residuals) if self.residuals else []
        encoded = torch.empty(self.encoded_sizes[i], dtype=torch.uint8, device=bucket.device)
        with torch.no_grad():
            self._encode_into(self._views(bucket, table), self._views(bucket, self.anchor), res,
                              encoded)
        return encoded

    def start_exchange(self, i: int, encoded: torch.Tensor, process_set, members: List[int],
                       tag: str):
        """Start bucket ``i``'s alltoall; returns (its splits, its handle)."""
        shards = shard_records(encoded.numel() // self.record_bytes, len(members))
        splits = [k * self.record_bytes for k in shards]
        name = f"hvd_hier.{tag}.{self.codec}.{i}"  # (sharded codecs: plain names)
        return splits, self.exchange.alltoall(encoded, splits, f"{name}.a2a", process_set)

    def reduce_shard(self, received: torch.Tensor, splits: List[int], members: List[int],
                     rank: int, scale: float) -> torch.Tensor:
        """This rank's shard of the encoded mean (the contributions' sum times ``scale``),
        from the alltoall's output."""
        me = sorted(members).index(rank)  # Horovod orders a set by rank
        mine = torch.empty(splits[me], dtype=torch.uint8, device=received.device)
        self._ext.reduce_encoded(received, mine, self.codec, len(members), scale)
        return mine

    def start_gather(self, i: int, mine: torch.Tensor, process_set, tag: str):
        """Start the allgather of bucket ``i``'s encoded mean; returns its handle."""
        return self.exchange.allgather(mine, f"hvd_hier.{tag}.{self.codec}.{i}.gather",
                                       process_set)

    def finish(self, i: int, mean: torch.Tensor, table: Optional[Sequence[torch.Tensor]] = None,
               to_gradient: bool = False, scale: float = 1.0) -> None:
        """Write bucket ``i``'s decoded ``mean`` into ``table`` (default: the tensors): without
        ``to_gradient`` x = x̄ = x̄ + mean (the anchor follows); with it x = −mean. ``scale``:
        the exchange's (this class applies it when reducing the shard)."""
        bucket = self.buckets[i]
        xs = self._views(bucket, self.tensors if table is None else table)
        with torch.no_grad():
            if to_gradient:
                self._ext.decode_into(mean, xs, self.codec, -1.0)
            else:
                self._ext.apply_delta(mean, xs, self._views(bucket, self.anchor), self.codec)

    def state_dict(self) -> dict:
        return {"codec": self.codec, "residuals": list(self.residuals)}

    def load_state_dict(self, saved: Optional[dict]) -> None:
        """Restore the residuals (this rank's own); None or another codec: zero them."""
        if saved is None or saved.get("codec") != self.codec or \
                len(saved.get("residuals", [])) != len(self.residuals):
            self.reset_residuals()
            return
        with torch.no_grad():
            for r, s in zip(self.residuals, saved["residuals"]):
                r.copy_(s)
