"""Which schedule to use: a cost model of one training step, the cluster's figures it needs,
and ``python -m hvd_hier.plan``, which measures them inside a job and prints a table of
predicted step times with a recommendation.

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
measured step times; ``plan()`` measures t_c, T_local and B_inter in the user's job.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["ring", "global_link_bytes", "step_time", "hidden_seconds", "overlap_collectives",
           "encoded_size", "Cluster", "Setting", "Prediction", "candidates", "predict",
           "shortest_overlap", "recommend", "table", "measure", "plan", "main"]

INT8_BYTES_PER_ELEMENT = 2064 / 2048  #: a record of 2048 values and a 16-byte header
HALF_BYTES_PER_ELEMENT = 2.0  #: fp16, bf16


def ring(p: int) -> float:
    return 2 * (p - 1) / p if p > 1 else 0.0


def global_link_bytes(size_bytes: float, p: int, l: int, encoded: Optional[float] = None,
                      two_stage: bool = False) -> float:
    """Bytes one node's uplink sends per global reduction over p ranks, l per node (placed
    node by node).

    One stage: a ring allreduce of ``size_bytes`` (one ring edge leaves the node), or a
    compressed reduction of ``encoded`` bytes per rank: its alltoall (each of the node's l
    ranks sends one shard of encoded / p to each of the p - l ranks elsewhere) and its ring
    allgather (one edge leaves the node, carrying the p - 1 shards the next node lacks).
    ``two_stage`` (hvd_hier with the ranks of a node as the level below, l >= 2): the node
    averages first and each of its ranks reduces 1/l of the model with the ranks at its
    position on the other n = p / l nodes, so the uplink carries 2(n - 1)/n of the model, or
    of its encoding (alltoall and allgather over n ranks)."""
    payload = size_bytes if encoded is None else encoded
    if two_stage and l >= 2 and p // l >= 2:
        return ring(p // l) * payload
    if encoded is None:
        return ring(p) * size_bytes
    return (l * (p - l) + (p - 1)) / p * encoded if p > 1 else 0.0


def step_time(method: str, k1: int, k2: int, size_bytes: float, p: int, l: int,
              t_compute: float, b_inter: float, t_local: float, latency: float = 0.0,
              encoded: Optional[float] = None, two_stage: bool = False,
              overlap: int = 0, t_codec: float = 0.0,
              t_global: Optional[float] = None, collectives: int = 0) -> float:
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
    ``collectives``: those of one rank's overlapped reduction, for ``hidden_seconds``)."""
    t_link = global_link_bytes(size_bytes, p, l, encoded, two_stage) / b_inter
    if method == "compute":
        return t_compute
    if method == "sync":
        return t_compute + latency + t_link
    period = k1 * k2
    staged = two_stage and l >= 2 and p // l >= 2
    locals_ = 0 if method == "kavg" else k2 - 1
    extra = 0.0
    if staged or overlap:  # the node's averaging at the global step; two stages: the gather
        locals_ += 1 if method != "kavg" else 0
        extra += 0.5 * t_local if staged else 0.0
    if t_global is not None:  # measured as a whole: the gather and codec passes are in it
        comm, hideable = t_global, max(0.0, t_global - t_codec)
        extra = 0.0
    else:
        comm, hideable = latency + t_codec + t_link, t_link
    return (period * t_compute + locals_ * t_local + extra + comm
            - hidden_seconds(hideable, overlap, t_compute, collectives)) / period


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
    ``hvd_hier.pieces.CHUNK_BYTES`` (every l-th in two stages), one allreduce each, or for a
    compressed one an alltoall and an allgather each."""
    from .pieces import CHUNK_BYTES

    pieces = max(1, math.ceil((encoded if encoded is not None else size_bytes) / CHUNK_BYTES))
    if two_stage and l >= 2:
        pieces = math.ceil(pieces / l)
    return pieces * (2 if encoded is not None else 1)


def encoded_size(size_bytes: float, codec: Optional[str], element_size: int = 4) -> float:
    """Bytes of the encoded delta of a model of ``size_bytes`` (``codec`` None: the model)."""
    if codec is None:
        return size_bytes
    per = INT8_BYTES_PER_ELEMENT if codec == "int8" else HALF_BYTES_PER_ELEMENT
    return size_bytes / element_size * per


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


@dataclass(frozen=True)
class Setting:
    """A candidate: K1, K2, the global level's compression and overlap_steps."""

    k1: int
    k2: int
    compression: Optional[str] = None
    overlap: int = 0

    def describe(self) -> str:
        words = [f"K1={self.k1} K2={self.k2}"]
        if self.compression:
            words.append(self.compression)
        if self.overlap:
            words.append(f"overlap {self.overlap}")
        return ", ".join(words)

    def arguments(self) -> str:
        """The keyword arguments of ``hvd_hier.DistributedOptimizer`` for this setting."""
        out = [f"local_steps={self.k1}", f"local_rounds={self.k2}"]
        if self.compression:
            out.append(f"global_compression={self.compression!r}")
        if self.overlap:
            out.append(f"overlap_steps={self.overlap}")
        return ", ".join(out)


@dataclass(frozen=True)
class Prediction:
    setting: Setting
    step: float  #: seconds per step
    share: float  #: the part of the step not spent computing


def candidates(periods: Sequence[int] = (4, 8, 16, 32), k1s: Sequence[int] = (1, 2, 4),
               codecs: Sequence[Optional[str]] = (None, "bf16", "int8"),
               overlap: bool = True) -> List[Setting]:
    """The default grid: K1 in ``k1s`` dividing each period, each codec, with and without
    overlap (D = K1·K2 − 1)."""
    out = []
    for period in periods:
        for k1 in k1s:
            if period % k1 or period // k1 < 1:
                continue
            for codec in codecs:
                for d in ((0, period - 1) if overlap and period > 1 else (0,)):
                    out.append(Setting(k1, period // k1, codec, d))
    return out


def predict(cluster: Cluster, size_bytes: float, settings: Sequence[Setting],
            two_stage: bool = True) -> List[Prediction]:
    """The model's step time for each setting (two-stage where the ranks of a node form the
    local groups: hvd_hier's default ``group_size="local"``)."""
    out = []
    for s in settings:
        encoded = encoded_size(size_bytes, s.compression) if s.compression else None
        t = step_time("hier", s.k1, s.k2, size_bytes, cluster.p, cluster.l, cluster.t_compute,
                      cluster.b_inter, cluster.t_local, cluster.latency, encoded=encoded,
                      two_stage=two_stage, overlap=s.overlap,
                      t_codec=cluster.t_codec.get(s.compression, 0.0) if s.compression else 0.0,
                      t_global=cluster.t_global.get(s.compression) if s.compression else None,
                      collectives=overlap_collectives(size_bytes, cluster.l, encoded, two_stage))
        out.append(Prediction(s, t, 1.0 - cluster.t_compute / t if t > 0 else 0.0))
    return out


def shortest_overlap(cluster: Cluster, size_bytes: float, predictions: Sequence[Prediction],
                     two_stage: bool = True, within: float = 0.01) -> List[Prediction]:
    """Each overlapped prediction with the smallest ``overlap_steps`` whose predicted step is
    within ``within`` of its own: while a reduction is in flight the nodes differ by D steps
    of their own progress, and a D as long as a period cost 1.8 points on the non-IID sweep
    (docs/RESULTS.md), so D should be no longer than it takes to hide the reduction."""
    out = []
    for p in predictions:
        s = p.setting
        if s.overlap:
            for d in range(1, s.overlap + 1):
                (q,) = predict(cluster, size_bytes, [Setting(s.k1, s.k2, s.compression, d)],
                               two_stage)
                if q.step <= (1 + within) * p.step:
                    p = q
                    break
        out.append(p)
    return out


def recommend(predictions: Sequence[Prediction], tolerance: float = 0.10) -> Prediction:
    """The setting to start from: among those within ``tolerance`` of the fastest, the one
    that averages most often (the smallest K1·K2, then the smallest K1: the closest to
    synchronous SGD), then without compression, then without overlap."""
    best = min(p.step for p in predictions)
    near = [p for p in predictions if p.step <= (1 + tolerance) * best]
    return min(near, key=lambda p: (p.setting.k1 * p.setting.k2, p.setting.k1,
                                    p.setting.compression is not None, p.setting.overlap))


def table(cluster: Cluster, size_bytes: float, predictions: Sequence[Prediction],
          chosen: Optional[Prediction] = None, rows: int = 20) -> str:
    """Markdown: the measured figures, the ``rows`` fastest settings (and the recommended
    one), and the recommendation."""
    lines = [f"{cluster.p} ranks, {cluster.l} per node; model {size_bytes / 1e6:.1f} MB; "
             f"computation {1e3 * cluster.t_compute:.1f} ms per step; a local averaging "
             f"{1e3 * cluster.t_local:.1f} ms; a node's uplink {cluster.b_inter / 1e6:.1f} MB/s"
             + "".join(f"; a global reduction with {codec} {1e3 * t:.1f} ms"
                       for codec, t in sorted(cluster.t_global.items())),
             "", "| setting | predicted step | communication share |", "|---|---:|---:|"]
    ranked = sorted(predictions, key=lambda p: p.step)
    shown = ranked[:rows] + ([chosen] if chosen is not None and chosen not in ranked[:rows]
                             else [])
    for p in shown:
        mark = " **(recommended)**" if chosen is not None and p is chosen else ""
        lines.append(f"| {p.setting.describe()}{mark} | {1e3 * p.step:.1f} ms | "
                     f"{100 * p.share:.0f}% |")
    if chosen is not None:
        lines += ["", f"Recommended: hvd_hier.DistributedOptimizer(..., "
                      f"{chosen.setting.arguments()}) — the setting that averages most often "
                      "among those within 10% of the fastest."]
    return "\n".join(lines)


def _median_seconds(fn: Callable[[], None], repeats: int, best: bool = False) -> float:
    """The median time of ``repeats`` calls of ``fn`` after one untimed call (``best``: the
    shortest, for work that other ranks' work on shared cores only ever slows down)."""
    fn()  # once untimed: allocations, caches, Horovod's negotiation of the names
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) if best else sorted(times)[len(times) // 2]


def measure(size_bytes: float, step_fn: Optional[Callable[[], None]] = None,
            compute_s: Optional[float] = None, repeats: int = 5,
            codecs: Sequence[str] = ("bf16", "int8")) -> Cluster:
    """Measure the cluster's figures inside a Horovod job (every rank calls it alike):

    * the computation of a step: ``compute_s`` if given, else the median time of
      ``step_fn()`` (one training step of the user's model, without hvd_hier), the slowest
      rank's;
    * a local averaging: the shortest time of an averaging of ``size_bytes`` within a node
      as the optimizer does it (the non-finite check, then flat buffers reduced in place);
    * a node's uplink: the median time of the two-stage global stage, every rank of a node
      reducing its 1/L of the model with the ranks at its position on the other nodes at
      once, as bytes per second over 2(N − 1)/N of the model;
    * the latency of one small collective over all ranks;
    * for each of ``codecs``, the fused kernels' encoding of a rank's share of the model and
      decoding of the whole (``Cluster.t_codec``), and a whole compressed global reduction
      as the optimizer runs it (``Cluster.t_global``; with two or more nodes).

    The ranks of a node are those with the same Horovod host name; every node must hold the
    same number."""
    import torch

    import horovod.torch as hvd

    from .collectives import allgather_object
    from .jobsetup import hostname
    from .topology import _by_host, plan_cross_groups, process_set_for

    p, rank = hvd.size(), hvd.rank()
    hosts = allgather_object(hostname(), hvd.global_process_set, name="hvd_hier.plan.hosts")
    nodes = list(_by_host(list(range(p)), hosts).values())
    counts = {len(n) for n in nodes}
    if len(counts) != 1:
        raise ValueError(f"hvd_hier.plan: every node must hold the same number of ranks, got "
                         f"{[len(n) for n in nodes]} on {len(nodes)} nodes")
    l = counts.pop()
    if compute_s is None:
        if step_fn is None:
            raise ValueError("hvd_hier.plan: pass compute_s (seconds per step) or step_fn (one "
                             "training step of the model)")
        compute_s = _median_seconds(step_fn, repeats)
    compute_s = float(hvd.allreduce(torch.tensor([compute_s], dtype=torch.float64),
                                    op=hvd.Max, name="hvd_hier.plan.compute").item())
    local_sets = [process_set_for(n) if len(n) > 1 else None for n in nodes]
    mine = next(i for i, n in enumerate(nodes) if rank in n)
    numel = max(1, int(size_bytes // 4))
    buffer = torch.zeros(numel, dtype=torch.float32)
    t_local = 0.0
    if l > 1:  # an averaging as the optimizer does it: the non-finite check, flat buffers
        from .flat import FlatAverager
        from .reduction import nonfinite_ranks

        averager = FlatAverager([torch.zeros(numel)], 25 << 20, max_in_flight=1)

        def local():
            nonfinite_ranks(averager.tensors, local_sets[mine], nodes[mine], "plan", None)
            averager.average(local_sets[mine], l, "hvd_hier.plan.local")

        # the shortest: back to back, the averagings of every node contend for the cores,
        # where in training computation separates them (measured on 2 shared cores: 183 to
        # 597 ms for the same averaging)
        t_local = _median_seconds(local, repeats, best=True)
    b_inter = float("inf")
    cross = plan_cross_groups([list(range(p))], nodes) if l > 1 else None
    if len(nodes) > 1:
        groups = cross if cross is not None else [list(range(p))]
        sets = [process_set_for(g) for g in groups]
        group = next(i for i, g in enumerate(groups) if rank in g)
        share = buffer[: max(1, numel // l)] if cross else buffer  # this rank's 1/l
        seconds = _median_seconds(lambda: hvd.allreduce_(
            share, op=hvd.Sum, name="hvd_hier.plan.cross", process_set=sets[group]), repeats)
        seconds = float(hvd.allreduce(torch.tensor([seconds], dtype=torch.float64), op=hvd.Max,
                                      name="hvd_hier.plan.cross_time").item())
        b_inter = global_link_bytes(4 * numel, p, l, two_stage=cross is not None) / seconds
    tiny = torch.zeros(1)
    latency = _median_seconds(lambda: hvd.allreduce_(tiny, op=hvd.Sum,
                                                     name="hvd_hier.plan.latency"), repeats)
    t_codec = {codec: _codec_seconds(codec, buffer, l if cross is not None else 1, repeats)
               for codec in codecs}
    t_global = {}
    if len(nodes) > 1:
        for codec in codecs:
            seconds = _compressed_seconds(codec, numel, groups[group], sets[group],
                                          local_sets[mine] if cross else None, l if cross else 1,
                                          repeats)
            t_global[codec] = float(hvd.allreduce(
                torch.tensor([seconds], dtype=torch.float64), op=hvd.Max,
                name=f"hvd_hier.plan.{codec}_time").item())
    return Cluster(p, l, compute_s, t_local, b_inter, latency, t_codec, t_global)


def _codec_seconds(codec: str, x, shares: int, repeats: int) -> float:
    """The fused kernels' time for one compressed reduction of ``x`` on this rank: encoding
    its share (1/``shares``) and decoding the whole mean into the model."""
    import torch

    from ._ext import extension

    ext = extension()
    part = x[: max(1, x.numel() // shares)]
    anchor = torch.zeros_like(part)
    residual = [torch.zeros_like(part)] if codec == "int8" else []
    encoded = torch.empty(ext.encoded_bytes(codec, part.numel()), dtype=torch.uint8)
    whole = torch.zeros(ext.encoded_bytes(codec, x.numel()), dtype=torch.uint8)
    target, target_anchor = torch.zeros_like(x), torch.zeros_like(x)

    def run():
        ext.encode_delta([part], [anchor], residual, encoded, codec)
        ext.apply_delta(whole, [target], [target_anchor], codec)

    return _median_seconds(run, repeats)


def _compressed_seconds(codec: str, numel: int, members: List[int], process_set, node_set,
                        shares: int, repeats: int) -> float:
    """The median seconds of one compressed global reduction of ``numel`` float32 values as
    the optimizer runs it after the node's averaging: this rank encodes its 1/``shares`` of
    the model (the optimizer's default 25 MB buckets), every bucket's alltoall and allgather
    run over ``members`` at once, the node (``node_set``; None: one stage) gathers the
    encoded means, and the whole model is decoded. Each repetition starts from the same
    random delta."""
    import torch

    import horovod.torch as hvd

    from .compressed import DeltaReducer

    part = max(1, numel // shares)
    source = torch.randn(part, generator=torch.Generator().manual_seed(hvd.rank()))
    x, anchor = torch.empty(part), torch.zeros(part)
    reducer = DeltaReducer(codec, [x], [anchor], 25 << 20)
    rank, tag = hvd.rank(), f"plan.{codec}"
    target = torch.zeros(part)

    def once():
        n = len(reducer.buckets)
        started = [reducer.start_exchange(i, reducer.encode(i), process_set, members, tag)
                   for i in range(n)]
        means = [reducer.end_exchange(i, started[i], process_set, members, rank,
                                      len(members), tag) for i in range(n)]
        tables = [(means, [x])]
        if node_set is not None:  # the node's other shares, decoded here too
            got = hvd.allgather(torch.cat(means), name=f"hvd_hier.plan.{codec}.shares",
                                process_set=node_set)
            sizes = [m.numel() for m in means]
            for j in range(1, shares):
                tables.append((list(got[j * sum(sizes):(j + 1) * sum(sizes)].split(sizes)),
                               [target]))
        for encoded, table in tables:
            for i, mean in enumerate(encoded):
                reducer.finish(i, mean, table)

    times = []
    for r in range(repeats + 1):  # the first untimed
        with torch.no_grad():
            x.copy_(source)
            anchor.zero_()
            if reducer.residuals:
                reducer.residuals[0].zero_()
        start = time.perf_counter()
        once()
        if r:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def plan(size_bytes: float, step_fn: Optional[Callable[[], None]] = None,
         compute_s: Optional[float] = None, settings: Optional[Sequence[Setting]] = None,
         repeats: int = 5) -> Tuple[Cluster, List[Prediction], Prediction]:
    """``measure`` the job, ``predict`` every setting (default: ``candidates()``), shorten
    each overlap to the ``shortest_overlap`` that hides as much, and ``recommend`` one:
    ``(cluster, predictions, recommended)``. Every rank calls it alike."""
    cluster = measure(size_bytes, step_fn, compute_s, repeats)
    two_stage = cluster.l > 1 and cluster.p // cluster.l > 1
    predictions = shortest_overlap(cluster, size_bytes, predict(
        cluster, size_bytes, settings or candidates(), two_stage=two_stage), two_stage)
    return cluster, predictions, recommend(predictions)


def _load_step(spec: str):
    """``module:function``: function() returns ``(model, step)``, step() one training step."""
    import importlib

    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--step must be module:function, got {spec!r}")
    return getattr(importlib.import_module(module), name)()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hvd_hier.plan",
        description="Inside a job started with horovodrun: measure the cluster and print the "
                    "predicted step time of Hier-AVG settings, with a recommendation.")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--model-mb", type=float, help="bytes averaged, in MB (1e6)")
    size.add_argument("--params", type=int, help="float32 parameters averaged")
    size.add_argument("--step", help="module:function returning (model, step): the model's "
                                     "float parameters are averaged, step() is timed")
    p.add_argument("--compute-ms", type=float,
                   help="milliseconds of computation per step (instead of timing --step)")
    p.add_argument("--periods", default="4,8,16,32", help="K1*K2 values to consider")
    p.add_argument("--repeats", type=int, default=5, help="timings per figure (median)")
    p.add_argument("--rows", type=int, default=20, help="settings shown, fastest first")
    p.add_argument("--json", help="also write the figures and every prediction to this file")
    args = p.parse_args(argv)
    import horovod.torch as hvd

    hvd.init()
    step_fn = None
    if args.step:
        model, step_fn = _load_step(args.step)
        size_bytes = float(sum(t.numel() * t.element_size() for t in model.parameters()))
    else:
        size_bytes = args.model_mb * 1e6 if args.model_mb is not None else 4.0 * args.params
    if args.compute_ms is None and step_fn is None:
        p.error("--compute-ms is needed without --step")
    compute_s = None if args.compute_ms is None else args.compute_ms / 1e3
    periods = [int(v) for v in args.periods.split(",")]
    cluster, predictions, chosen = plan(size_bytes, step_fn, compute_s,
                                        candidates(periods), args.repeats)
    if hvd.rank() == 0:
        print(table(cluster, size_bytes, predictions, chosen, args.rows), flush=True)
        if args.json:
            import dataclasses
            import json

            with open(args.json, "w") as f:
                json.dump({"cluster": dataclasses.asdict(cluster), "size_bytes": size_bytes,
                           "recommended": dataclasses.asdict(chosen.setting),
                           "predictions": [dict(dataclasses.asdict(p.setting), step=p.step,
                                                share=p.share) for p in predictions]},
                          f, indent=1)
    hvd.allreduce(__import__("torch").zeros(1), name="hvd_hier.plan.done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
