"""A small cost model of one training step under each method, and what it predicts.

Per step, averaged over a period of K1*K2 steps:

    T = t_c + (K2 - 1) / (K1 K2) * T_local + 1 / (K1 K2) * T_global      (Hier-AVG)
    T_global = a + 2 (P - 1) / P * S / B_inter                           (ring over P ranks)
    T_global = a + (L (P - L) + P - 1) / P * E / B_inter     (compressed: E encoded bytes)
    T_local  = a + 2 (L - 1) / L * S / B_intra                           (ring over L ranks)

with t_c the compute time of a step, S the bytes averaged, P the ranks, L the ranks per node
and B_inter the bandwidth of one node's uplink (in a ring placed node by node exactly one
edge leaves each node, so that uplink carries 2(P-1)/P*S). K-AVG is the case without local
averagings, synchronous SGD the case K1 = K2 = 1 with gradients (no overlap of communication
with the backward pass is assumed, which makes it an upper bound for Horovod, which overlaps).

On the simulated cluster the inputs are measured in the same run: t_c from the compute-only
method (its median step), B_inter from one TCP stream between two nodes, and T_local from the local averagings
of the Hier-AVG (or PyTorch) runs themselves (on shared CPU cores it is the CPU, not a link,
that sets it).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Dict, List, Optional


def ring(p: int) -> float:
    return 2 * (p - 1) / p if p > 1 else 0.0


@dataclass
class Fit:
    t_compute: float                 # s per step without communication
    b_inter: float                   # bytes/s of one node's uplink
    t_local: Dict[str, float]        # s per local averaging, by method ("hier", "torch")

    @classmethod
    def from_runs(cls, runs: List[Dict]) -> Optional["Fit"]:
        compute = next((r for r in runs if r["method"] == "compute"), None)
        if compute is None or not runs or "link_throughput" not in runs[0]:
            return None
        t_local = {}
        for method in ("hier", "torch"):
            done = [(r["seconds_local"], r["local_averages"]) for r in runs
                    if r["method"] == method and r["local_averages"]]
            if done:
                t_local[method] = sum(s for s, _ in done) / sum(n for _, n in done)
        # the median step: a few slow steps (the scheduler of shared cores) would weigh on
        # every prediction through the mean
        t_c = (statistics.median(compute["step_seconds"]) if compute.get("step_seconds")
               else compute["total_seconds"] / compute["steps"])
        return cls(t_c, runs[0]["link_throughput"], t_local)


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
              overlap: int = 0) -> float:
    """The model's seconds per step (see the module doc; ``encoded``: the global level's
    encoded bytes per rank, for a compressed reduction; ``two_stage``: hvd_hier's reduction
    through the node, which adds a local averaging and a local gather of half its cost at
    each global reduction; ``overlap``: D steps whose computation the global reduction's link
    time hides behind; Horovod runs one collective at a time, so it hides behind computation
    only, never behind the local averagings)."""
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
    hidden = min(t_link, overlap * t_compute)
    return (period * t_compute + locals_ * t_local + extra + latency + t_link - hidden) / period


def predict_step(run: Dict, fit: Fit) -> Optional[float]:
    """The model's step time for a benchmark run, from the measured inputs of its rate."""
    method = run["method"]
    size = run["params_bytes"] if method in ("sync", "torch") else run["payload_bytes"]
    t_local = fit.t_local.get(method, 0.0)
    if method in ("hier", "torch") and run["k2"] > 1 and method not in fit.t_local:
        return None
    encoded = run.get("encoded_bytes") if run.get("compression") else None
    return step_time(method, run["k1"], run["k2"], size, run["size"], run["ranks_per_node"],
                     fit.t_compute, fit.b_inter, t_local, encoded=encoded,
                     two_stage=two_stage(run), overlap=run.get("overlap_steps", 0))


def two_stage(run: Dict) -> bool:
    """Whether an hvd_hier run's global level reduces in two stages (Hier-AVG with the node
    as the level below, 2 or more ranks per node and 2 or more nodes)."""
    return (run["method"] == "hier" and run["k2"] >= 1 and run["ranks_per_node"] >= 2
            and run["size"] // run["ranks_per_node"] >= 2)


# A real cluster, for the prediction: 8 nodes of 8 GPUs, NVLink inside a node, one NIC each.
REAL_NODES, REAL_GPUS = 8, 8
REAL_NVLINK = 300e9          # bytes/s a GPU reaches in an intra-node ring allreduce
REAL_LATENCY = 50e-6         # s per collective (launch and synchronisation)
REAL_COMPUTE = {"ResNet-18": (46.8e6, 0.05), "ResNet-50": (102.2e6, 0.15)}  # bytes, s/step
REAL_LINKS = {"10 Gbit/s": 10e9 / 8, "25 Gbit/s": 25e9 / 8, "100 Gbit/s": 100e9 / 8}


def real_cluster_table(results: List[Dict], fits: Dict) -> str:
    """Markdown: the model's step times on a real cluster for the schedules benchmarked."""
    schedules = sorted({(r["k1"], r["k2"]) for r in results if r["method"] == "hier"})
    if not schedules:
        schedules = [(1, 8)]
    periods = sorted({a * b for a, b in schedules})
    columns = ([("kavg", k, 1) for k in periods] + [("hier", a, b) for a, b in schedules])
    p, l = REAL_NODES * REAL_GPUS, REAL_GPUS
    lines = [
        "## What the cost model predicts for a real cluster", "",
        f"{REAL_NODES} nodes x {REAL_GPUS} GPUs, one NIC per node, NVLink inside a node "
        f"(ring allreduce at {REAL_NVLINK / 1e9:.0f} GB/s), {REAL_LATENCY * 1e6:.0f} us per "
        "collective; compute per step assumed (float32 model sizes). Step time in ms, and the "
        "speed-up over synchronous SGD without overlap (in brackets: over synchronous SGD "
        "whose communication hides entirely behind compute, the best Horovod can do).", "",
        "| model, t_c | link | sync | " + " | ".join(
            f"K-AVG K={a * b}" if m == "kavg" else f"Hier-AVG {a}x{b}"
            for m, a, b in columns) + " |",
        "|---|---|---:|" + "---:|" * len(columns),
    ]
    for model, (size, t_c) in REAL_COMPUTE.items():
        for link, bw in REAL_LINKS.items():
            t_local = REAL_LATENCY + ring(l) * size / REAL_NVLINK
            sync = step_time("sync", 1, 1, size, p, l, t_c, bw, t_local, REAL_LATENCY)
            overlap = max(t_c, sync - t_c)
            cells = [f"{1e3 * sync:.0f}"]
            for method, k1, k2 in columns:
                t = step_time(method, k1, k2, size, p, l, t_c, bw, t_local, REAL_LATENCY)
                cells.append(f"{1e3 * t:.0f} ({sync / t:.2f}x; {overlap / t:.2f}x)")
            lines.append(f"| {model}, {1e3 * t_c:.0f} ms | {link} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)
