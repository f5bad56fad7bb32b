"""The cost model of one training step, and the figures of a job it needs (``Cluster``):
pure arithmetic, no torch, no Horovod. ``hvd_hier.plan.measure`` measures the figures,
``hvd_hier.plan.cli`` predicts and recommends settings from them.

The model, per step, averaged over a period of K1·K2 steps (one global reduction and K2 − 1
local averagings; an overlapped or two-stage global level makes the local groups average at
its step too):

    T = (K1·K2·t_c + n_local·T_local + T_extra + a + T_link − hidden) / (K1·K2)
    T_link = bytes on a node's uplink per global reduction / B_inter

with t_c the computation of a step, T_local one local averaging of the model, a the latency
of a collective, B_inter the bandwidth of a node's uplink, hidden what of the reduction hides
behind the computation of D = ``overlap_steps`` steps (below). The bytes:
2(P − 1)/P of the model for one ring over P ranks; in two stages (the ranks of a node first,
then one rank per node) 2(N − 1)/N of the model for N nodes; compressed, the same of its
encoding. A compressed reduction is measured whole instead (T_global: its collectives, the
node's gather and the codec passes), since on a busy machine its per-bucket collectives and
CPU passes cost more than its bytes; all of it but the codec passes can hide. Horovod runs one
collective at a time, so an overlapped reduction hides behind the computation only, never
behind the local averagings, and since its pieces start at step boundaries, a piece still
running at a boundary delays that step's local averaging: ``hidden_seconds`` takes off the
larger of what the computation cannot hold and half a collective per busy boundary.

The benchmark on the simulated cluster (``benchmarks/cluster``) checks the model against
measured step times; ``hvd_hier.plan.measure`` measures t_c, T_local and B_inter in the user's
job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

from ..config.codecs import TopK, codec_named, gathered
from ..reduce import CHUNK_BYTES

__all__ = ["INT8_BYTES_PER_ELEMENT", "HALF_BYTES_PER_ELEMENT", "RECORD_BYTES", "record_bytes",
           "is_gathered", "ring", "global_link_bytes", "peak_link_bytes", "step_time",
           "hidden_seconds", "overlap_collectives", "encoded_size", "Cluster"]

INT8_BYTES_PER_ELEMENT = 2064 / 2048  #: a record of 2048 values and a 16-byte header
HALF_BYTES_PER_ELEMENT = 2.0  #: fp16, bf16
CHUNK = 2048  #: elements per record (csrc/codec.h)
#: bytes of one record of ``CHUNK`` elements per dense codec (csrc/codec.h)
RECORD_BYTES = {"fp16": 4096, "bf16": 4096, "int8": 2064, "int4": 1040, "int2": 528}
_BITS = {"int8": 8, "int4": 4, "int2": 2}


def record_bytes(codec: str) -> int:
    """Bytes of one record of ``codec`` (a dense codec's name, or a top-k's short name such as
    ``topk0.02_int2``: a 16-byte header, k two-byte offsets and k codes, padded to 16 bytes,
    k = ceil(fraction·2048); csrc/topk.h)."""
    if codec in RECORD_BYTES:
        return RECORD_BYTES[codec]
    topk = codec_named(codec)
    if not isinstance(topk, TopK):
        raise ValueError(f"codec must be one of {', '.join(RECORD_BYTES)} or topk<fraction>_"
                         f"<int8|int4|int2>, got {codec!r}")
    k = min(CHUNK, max(1, math.ceil(topk.fraction * CHUNK)))
    raw = 16 + 2 * k + math.ceil(k * _BITS[topk.values] / 8)
    return -(-raw // 16) * 16


def is_gathered(codec: Optional[str]) -> bool:
    """Whether every rank gathers every contribution of ``codec`` (a codec's short name:
    int4, int2, top-k)."""
    return gathered(codec_named(codec))


def ring(p: int) -> float:
    return 2 * (p - 1) / p if p > 1 else 0.0


def global_link_bytes(size_bytes: float, p: int, l: int, encoded: Optional[float] = None,
                      two_stage: bool = False, gathered: bool = False) -> float:
    """Bytes one node's uplink sends per global reduction over p ranks, l per node (placed
    node by node).

    One stage: a ring allreduce of ``size_bytes`` (one ring edge leaves the node), or a
    compressed reduction of ``encoded`` bytes per rank: its alltoall (each of the node's l
    ranks sends one shard of encoded / p to each of the p - l ranks elsewhere) and its ring
    allgather (one edge leaves the node, carrying the p - 1 shards the next node lacks).
    ``two_stage`` (hvd_hier with the ranks of a node as the level below, l >= 2): the node
    averages first and each of its ranks reduces 1/l of the model with the ranks at its
    position on the other n = p / l nodes, so the uplink carries 2(n - 1)/n of the model, or
    of its encoding (alltoall and allgather over n ranks). ``gathered`` (int4, int2, top-k):
    the encoded contributions are allgathered whole, so the ring edge that leaves the node
    carries the p - 1 (two stages: n - 1) contributions the next node lacks."""
    payload = size_bytes if encoded is None else encoded
    if two_stage and l >= 2 and p // l >= 2:
        n = p // l
        return ((n - 1) if gathered and encoded is not None else ring(n)) * payload
    if encoded is None:
        return ring(p) * size_bytes
    if gathered:
        return float(p - 1) * encoded
    return (l * (p - l) + (p - 1)) / p * encoded if p > 1 else 0.0


def peak_link_bytes(size_bytes: float, p: int, l: int, encoded: Optional[float] = None,
                    two_stage: bool = False, gathered: bool = False,
                    fragments: int = 1) -> float:
    """Bytes one node's uplink sends at the step of one global reduction: with F fragments,
    about 1/F of ``global_link_bytes`` (the split's fragments differ by at most a tensor)."""
    return global_link_bytes(size_bytes, p, l, encoded, two_stage, gathered) / fragments


def step_time(method: str, k1: int, k2: int, size_bytes: float, p: int, l: int,
              t_compute: float, b_inter: float, t_local: float, latency: float = 0.0,
              encoded: Optional[float] = None, two_stage: bool = False,
              overlap: int = 0, t_codec: float = 0.0,
              t_global: Optional[float] = None, collectives: int = 0,
              gathered: bool = False, fragments: int = 1) -> float:
    """The model's seconds per step (see the module doc; ``encoded``: the global level's
    encoded bytes per rank, for a compressed reduction; ``two_stage``: hvd_hier's reduction
    through the node, which adds a local averaging and a local gather of half its cost at
    each global reduction; ``overlap``: D steps whose computation the global reduction's link
    time hides behind; Horovod runs one collective at a time, so it hides behind computation
    only, never behind the local averagings; ``t_codec``: the seconds of a compressed
    reduction's encoding and decoding on the training thread, which nothing hides;
    ``t_global``: the measured seconds of the global reduction after the node's averaging
    (its collectives, gather and codec passes; ``Cluster.t_global``), which then replaces
    latency, link, gather and codec terms, and of which all but ``t_codec`` can hide;
    ``collectives``: those of one rank's overlapped reduction, for ``hidden_seconds``;
    ``gathered``: every contribution allgathered (int4, int2, top-k); ``fragments``: F
    reductions of 1/F of the model per period, each after the node's averaging, each with
    its own latency and each hiding behind its own D steps)."""
    t_link = global_link_bytes(size_bytes, p, l, encoded, two_stage, gathered) / b_inter
    if method == "compute":
        return t_compute
    if method == "sync":
        return t_compute + latency + t_link
    period, f = k1 * k2, fragments
    staged = two_stage and l >= 2 and p // l >= 2
    locals_ = 0 if method == "kavg" else k2 - 1
    extra = 0.0
    if staged or overlap or f > 1:  # the node averages at the global steps (f of them, of
        # which f - 1 replace a local step); two stages: the gather
        locals_ += 1 if method != "kavg" else 0
        extra += 0.5 * t_local if staged else 0.0
    if t_global is not None:  # measured as a whole: the gather and codec passes are in it
        comm, hideable = t_global + (f - 1) * latency, max(0.0, t_global - t_codec)
        extra = 0.0
    else:
        comm, hideable = f * latency + t_codec + t_link, t_link
    hidden = f * hidden_seconds(hideable / f, overlap, t_compute, -(-collectives // f))
    return (period * t_compute + locals_ * t_local + extra + comm - hidden) / period


def hidden_seconds(busy: float, overlap: int, t_compute: float, collectives: int = 0) -> float:
    """How much of ``busy`` seconds of an overlapped reduction's collectives hides behind the
    computation of ``overlap`` steps. Horovod runs one collective at a time, and the pieces
    are submitted at step boundaries only: a collective still running when a step ends
    delays that step's local averaging, on average by half a collective (``busy`` /
    ``collectives``) at each step boundary the reduction keeps busy. What shows is the larger
    of that and what the computation cannot hold."""
    if not overlap:
        return 0.0
    shown = max(0.0, busy - overlap * t_compute)
    if collectives:
        boundaries = overlap if t_compute <= 0 else min(overlap, math.ceil(busy / t_compute))
        shown = max(shown, boundaries * busy / collectives / 2)
    return max(0.0, busy - min(busy, shown))


def overlap_collectives(size_bytes: float, l: int, encoded: Optional[float] = None,
                        two_stage: bool = False) -> int:
    """The collectives one rank runs in an overlapped reduction: its pieces of about
    ``hvd_hier.reduce.CHUNK_BYTES`` (every l-th in two stages), one allreduce each, or for a
    compressed one an alltoall and an allgather each."""
    pieces = max(1, math.ceil((encoded if encoded is not None else size_bytes) / CHUNK_BYTES))
    if two_stage and l >= 2:
        pieces = math.ceil(pieces / l)
    return pieces * (2 if encoded is not None else 1)


def encoded_size(size_bytes: float, codec: Optional[str], element_size: int = 4) -> float:
    """Bytes of one rank's encoded delta of a model of ``size_bytes`` (``codec`` None: the
    model): ``record_bytes`` per 2048 elements (a large model's last, partial record
    neglected)."""
    if codec is None:
        return size_bytes
    return size_bytes / element_size / CHUNK * record_bytes(codec)


@dataclass(frozen=True)
class Cluster:
    """What the model needs to know of a job: ranks (``p``), ranks per node (``l``), seconds
    of computation per step, seconds per local averaging of the model, a node uplink's
    bytes/s, seconds of latency per collective, and the compressed reductions' own work."""

    p: int
    l: int
    t_compute: float
    t_local: float
    b_inter: float
    latency: float = 0.0
    #: per codec: seconds of a compressed global reduction's encoding (this rank's share)
    #: and decoding (the whole model) on this machine
    t_codec: Dict[str, float] = field(default_factory=dict)
    #: per codec: seconds of a whole compressed global reduction after the node's averaging,
    #: as the optimizer runs it (encoding, the collectives of each bucket, the node's gather,
    #: decoding): what per-collective latency and the codec passes cost under contention
    t_global: Dict[str, float] = field(default_factory=dict)

    @property
    def two_stage(self) -> bool:
        """Whether hvd_hier's default global level reduces through the node here (two or more
        ranks per node, two or more nodes)."""
        return self.l > 1 and self.p // self.l > 1
