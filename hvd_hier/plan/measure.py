"""The figures of ``hvd_hier.plan.model.Cluster``, measured inside a Horovod job: the
computation of a step, a local averaging and a compressed global reduction as the optimizer
runs them, the two-stage global stage, the latency of a collective and the codecs' kernels.
Every rank calls ``measure`` alike."""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Sequence

from .model import Cluster, global_link_bytes

__all__ = ["measure"]


def _timed(fn: Callable[[], None], repeats: int, best: bool = False,
           setup: Optional[Callable[[], None]] = None) -> float:
    """The median time of ``repeats`` calls of ``fn`` after one untimed call (``best``: the
    shortest, for work that other ranks' work on shared cores only ever slows down;
    ``setup``: run untimed before every call)."""
    times = []
    for r in range(repeats + 1):  # the first untimed: allocations, caches, Horovod's names
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        if r:
            times.append(time.perf_counter() - start)
    return min(times) if best else sorted(times)[len(times) // 2]


def _slowest(seconds: float, name: str) -> float:
    """The largest of every rank's ``seconds`` (a collective over all ranks)."""
    import torch

    import horovod.torch as hvd

    return float(hvd.allreduce(torch.tensor([seconds], dtype=torch.float64), op=hvd.Max,
                               name=f"hvd_hier.plan.{name}").item())


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

    from ..topology.groups import plan_cross_groups
    from ..topology.process_sets import process_set_for

    p, rank = hvd.size(), hvd.rank()
    nodes = _nodes(p)
    l = len(nodes[0])
    if compute_s is None:
        if step_fn is None:
            raise ValueError("hvd_hier.plan: pass compute_s (seconds per step) or step_fn (one "
                             "training step of the model)")
        compute_s = _timed(step_fn, repeats)
    compute_s = _slowest(compute_s, "compute")
    local_sets = [process_set_for(n) if len(n) > 1 else None for n in nodes]
    mine = next(i for i, n in enumerate(nodes) if rank in n)
    numel = max(1, int(size_bytes // 4))
    t_local = _local_seconds(numel, nodes[mine], local_sets[mine], repeats) if l > 1 else 0.0
    cross = plan_cross_groups([list(range(p))], nodes) if l > 1 else None
    groups = cross if cross is not None else [list(range(p))]
    sets = [process_set_for(g) for g in groups] if len(nodes) > 1 else None
    group = next(i for i, g in enumerate(groups) if rank in g)
    buffer = torch.zeros(numel, dtype=torch.float32)
    b_inter = _uplink_bytes_per_s(buffer, p, l, cross is not None, sets[group],
                                  repeats) if len(nodes) > 1 else float("inf")
    tiny = torch.zeros(1)
    latency = _timed(lambda: hvd.allreduce_(tiny, op=hvd.Sum, name="hvd_hier.plan.latency"),
                     repeats)
    t_codec = {codec: _codec_seconds(codec, buffer, l if cross is not None else 1, repeats)
               for codec in codecs}
    t_global = {}
    for codec in codecs if len(nodes) > 1 else ():
        seconds = _compressed_seconds(codec, numel, groups[group], sets[group],
                                      local_sets[mine] if cross else None, l if cross else 1,
                                      repeats)
        t_global[codec] = _slowest(seconds, f"{codec}_time")
    return Cluster(p, l, compute_s, t_local, b_inter, latency, t_codec, t_global)


def _uplink_bytes_per_s(buffer, p: int, l: int, two_stage: bool, process_set,
                        repeats: int) -> float:
    """A node's uplink: the median time of the global stage over ``process_set`` (with
    ``two_stage``, each rank reduces its 1/``l`` of ``buffer`` with the ranks at its position
    on the other nodes, all at once), as bytes per second over what crosses the link."""
    import horovod.torch as hvd

    share = buffer[: max(1, buffer.numel() // l)] if two_stage else buffer
    seconds = _timed(lambda: hvd.allreduce_(
        share, op=hvd.Sum, name="hvd_hier.plan.cross", process_set=process_set), repeats)
    return global_link_bytes(4 * buffer.numel(), p, l, two_stage=two_stage) / \
        _slowest(seconds, "cross_time")


def _nodes(p: int) -> List[List[int]]:
    """The ranks of each host (the ranks of a node: one Horovod host name); every node must
    hold the same number."""
    import horovod.torch as hvd

    from ..comm.collectives import allgather_object
    from ..comm.horovod_api import hostname
    from ..topology.groups import by_host

    hosts = allgather_object(hostname(), hvd.global_process_set, name="hvd_hier.plan.hosts")
    nodes = list(by_host(list(range(p)), hosts).values())
    if len({len(n) for n in nodes}) != 1:
        raise ValueError(f"hvd_hier.plan: every node must hold the same number of ranks, got "
                         f"{[len(n) for n in nodes]} on {len(nodes)} nodes")
    return nodes


def _local_seconds(numel: int, node: List[int], node_set, repeats: int) -> float:
    """The shortest time of a local averaging of ``numel`` float32 as the optimizer does it:
    the non-finite check, then flat buffers reduced in place. The shortest: back to back,
    the averagings of every node contend for the cores, where in training computation
    separates them (measured on 2 shared cores: 183 to 597 ms for the same averaging)."""
    import torch

    from ..reduce.flat import FlatAverager
    from ..reduce.nonfinite import nonfinite_ranks

    averager = FlatAverager([torch.zeros(numel)], 25 << 20, max_in_flight=1)

    def local():
        nonfinite_ranks(averager.tensors, node_set, node, "plan", None)
        averager.average(node_set, len(node), "hvd_hier.plan.local")

    return _timed(local, repeats, best=True)


def _codec_seconds(codec: str, x, shares: int, repeats: int) -> float:
    """The fused kernels' time for one compressed reduction of ``x`` on this rank: encoding
    its share (1/``shares``) and decoding the whole mean into the model (``codec``: a
    codec's short name)."""
    import torch

    from ..config.codecs import codec_named
    from ..reduce.gathered import make_reducer

    part = x[: max(1, x.numel() // shares)]
    mine = make_reducer(codec_named(codec), [part], [torch.zeros_like(part)], 25 << 20)
    whole = make_reducer(codec_named(codec), [torch.zeros_like(x)], [torch.zeros_like(x)],
                         25 << 20)
    means = [torch.zeros(n, dtype=torch.uint8) for n in whole.encoded_sizes]

    def run():
        for i in range(len(mine.buckets)):
            mine.encode(i)
        for i, mean in enumerate(means):
            whole.finish(i, mean)

    return _timed(run, repeats)


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

    from ..config.codecs import codec_named
    from ..reduce.codec import run_steps
    from ..reduce.gathered import make_reducer

    part = max(1, numel // shares)
    source = torch.randn(part, generator=torch.Generator().manual_seed(hvd.rank()))
    x, anchor = torch.empty(part), torch.zeros(part)
    reducer = make_reducer(codec_named(codec), [x], [anchor], 25 << 20)
    rank, tag = hvd.rank(), f"plan.{codec}"
    target = torch.zeros(part)

    def once():
        n = len(reducer.buckets)
        scale = 1.0 / len(members)
        means = [run_steps(reducer.steps(i, reducer.encode(i), process_set, members, rank,
                                         scale, tag), None) for i in range(n)]
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
                reducer.finish(i, mean, table, scale=scale)

    def fresh():
        with torch.no_grad():
            x.copy_(source)
            anchor.zero_()
            if reducer.residuals:
                reducer.residuals[0].zero_()

    return _timed(once, repeats, setup=fresh)
