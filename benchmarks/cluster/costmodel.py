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

from hvd_hier.plan import (INT8_BYTES_PER_ELEMENT, global_link_bytes, ring,  # noqa: F401
                           step_time)


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
    # hvd_hier's Hier-AVG reduces in two stages through the node; "best": int8 deltas at the
    # global level, overlapped with K1*K2 - 1 steps
    columns = ([("kavg", k, 1) for k in periods] + [("hier", a, b) for a, b in schedules]
               + [("best", a, b) for a, b in schedules])
    p, l = REAL_NODES * REAL_GPUS, REAL_GPUS
    lines = [
        "## What the cost model predicts for a real cluster", "",
        f"{REAL_NODES} nodes x {REAL_GPUS} GPUs, one NIC per node, NVLink inside a node "
        f"(ring allreduce at {REAL_NVLINK / 1e9:.0f} GB/s), {REAL_LATENCY * 1e6:.0f} us per "
        "collective; compute per step assumed (float32 model sizes). Step time in ms, and the "
        "speed-up over synchronous SGD without overlap (in brackets: over synchronous SGD "
        "whose communication hides entirely behind compute, the best Horovod can do).", "",
        "| model, t_c | link | sync | " + " | ".join(
            f"K-AVG K={a * b}" if m == "kavg" else f"Hier-AVG {a}x{b}" if m == "hier"
            else f"{a}x{b} + int8 + overlap {a * b - 1}" for m, a, b in columns) + " |",
        "|---|---|---:|" + "---:|" * len(columns),
    ]
    for model, (size, t_c) in REAL_COMPUTE.items():
        for link, bw in REAL_LINKS.items():
            t_local = REAL_LATENCY + ring(l) * size / REAL_NVLINK
            sync = step_time("sync", 1, 1, size, p, l, t_c, bw, t_local, REAL_LATENCY)
            overlap = max(t_c, sync - t_c)
            cells = [f"{1e3 * sync:.0f}"]
            for method, k1, k2 in columns:
                extra = {}
                if method == "best":
                    extra = dict(encoded=size / 4 * INT8_BYTES_PER_ELEMENT,
                                 overlap=k1 * k2 - 1)
                t = step_time("kavg" if method == "kavg" else "hier", k1, k2, size, p, l, t_c,
                              bw, t_local, REAL_LATENCY, two_stage=method != "kavg", **extra)
                cells.append(f"{1e3 * t:.0f} ({sync / t:.2f}x; {overlap / t:.2f}x)")
            lines.append(f"| {model}, {1e3 * t_c:.0f} ms | {link} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)
