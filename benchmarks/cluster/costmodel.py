"""A small cost model of one training step under each method, and what it predicts.

The model is ``hvd_hier.plan.model``'s (its module doc has the formula), per step averaged over a
period of K1*K2 steps: the computation, the local averagings, and the global reduction's link
time (2(P-1)/P of the bytes on a node's uplink for a ring over P ranks placed node by node;
2(N-1)/N for hvd_hier's two stages through N nodes; compressed: of the encoded bytes). K-AVG
is the case without local averagings, synchronous SGD the case K1 = K2 = 1 with gradients (no
overlap of communication with the backward pass is assumed, which makes it an upper bound
for Horovod, which overlaps).

On the simulated cluster the inputs are measured in the same run: t_c from each run's own
time outside its averagings (``run_compute``; else the compute-only method's median step),
B_inter from one TCP stream between two nodes, T_local from the
local averagings of the Hier-AVG (or PyTorch) runs without overlap (on shared CPU cores it is
the CPU, not a link, that sets it), and, where ``python -m hvd_hier.plan`` ran on the
cluster, its latency per collective and its whole compressed global reduction per codec
(``hvd_hier.plan``'s T_global: on these cores the compressed reduction's per-bucket
collectives and codec passes cost more than its bytes). With overlap, all but the codec
passes of the global reduction can hide behind the computation of the D steps.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hvd_hier.plan.model import (INT8_BYTES_PER_ELEMENT,  # noqa: F401
                                global_link_bytes, is_gathered, overlap_collectives, ring,
                                step_time)


@dataclass
class Fit:
    t_compute: float                 # s per step without communication
    b_inter: float                   # bytes/s of one node's uplink
    t_local: Dict[str, float]        # s per local averaging, by method ("hier", "torch")
    latency: float = 0.0             # s per collective (the planner's, if it ran)
    t_codec: Dict[str, float] = field(default_factory=dict)   # the planner's, by codec
    t_global: Dict[str, float] = field(default_factory=dict)  # the planner's, by codec

    @classmethod
    def from_runs(cls, runs: List[Dict]) -> Optional["Fit"]:
        compute = next((r for r in runs if r["method"] == "compute"), None)
        if compute is None or not runs or "link_throughput" not in runs[0]:
            return None
        t_local = {}
        for method in ("hier", "torch"):
            # without overlap: an overlapped run's local averagings also wait for the pieces
            # of the global reduction ahead of them, which the model counts apart
            done = [(averaging_seconds(r, "local"), r["local_averages"]) for r in runs
                    if r["method"] == method and r["local_averages"]
                    and not r.get("overlap_steps")]
            if done:
                t_local[method] = sum(s for s, _ in done) / sum(n for _, n in done)
        # the median step: a few slow steps (the scheduler of shared cores) would weigh on
        # every prediction through the mean
        t_c = (statistics.median(compute["step_seconds"]) if compute.get("step_seconds")
               else compute["total_seconds"] / compute["steps"])
        # the planner's own measurements on the cluster: latency, the codecs' kernel time
        # and a whole compressed global reduction
        planned = next((r["cluster"] for r in runs if r["method"] == "plan"), {})
        return cls(t_c, runs[0]["link_throughput"], t_local, planned.get("latency", 0.0),
                   dict(planned.get("t_codec", {})), dict(planned.get("t_global", {})))


def averaging_seconds(run: Dict, kind: str) -> float:
    """A run's seconds in its ``kind`` ("local", "global") averagings on the rank that waited
    least in them (the slowest rank, which sets the pace: the others' averagings also hold
    their wait for it); runs from before that was recorded: the most of any rank."""
    return run.get(f"seconds_{kind}_min", run[f"seconds_{kind}"])


def run_compute(run: Dict) -> Optional[float]:
    """A run's own computation per step: its wall time less the slowest rank's time in its
    averagings, per step (hvd_hier and PyTorch's averager count that time; synchronous
    Horovod's allreduces run inside the backward pass and are not counted: None). The cores
    of this machine run at a speed that drifts by up to 2x from one minute to the next, so a
    compute-only run minutes apart is a poor stand-in for the computation of another run."""
    if run["method"] not in ("hier", "kavg", "torch") or not run.get("steps"):
        return None
    return max(0.0, (run["total_seconds"] - averaging_seconds(run, "local")
                     - averaging_seconds(run, "global")) / run["steps"])


def predict_step(run: Dict, fit: Fit) -> Optional[float]:
    """The model's step time for a benchmark run, from the measured inputs of its rate and the
    run's own computation per step where it is known."""
    method = run["method"]
    t_compute = run_compute(run) or fit.t_compute
    size = run["params_bytes"] if method in ("sync", "torch") else run["payload_bytes"]
    t_local = fit.t_local.get(method, 0.0)
    if method in ("hier", "torch") and run["k2"] > 1 and method not in fit.t_local:
        return None
    codec = run.get("compression")
    encoded = run.get("encoded_bytes") if codec else None
    return step_time(method, run["k1"], run["k2"], size, run["size"], run["ranks_per_node"],
                     t_compute, fit.b_inter, t_local, fit.latency, encoded=encoded,
                     two_stage=two_stage(run), overlap=run.get("overlap_steps", 0),
                     t_codec=fit.t_codec.get(codec, 0.0) if codec else 0.0,
                     t_global=fit.t_global.get(codec) if codec else None,
                     collectives=overlap_collectives(size, run["ranks_per_node"], encoded,
                                                     two_stage(run)),
                     gathered=is_gathered(codec), fragments=run.get("fragments", 1))


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
                    encoded = size / 4 * INT8_BYTES_PER_ELEMENT
                    extra = dict(encoded=encoded, overlap=k1 * k2 - 1,
                                 collectives=overlap_collectives(size, l, encoded, True))
                t = step_time("kavg" if method == "kavg" else "hier", k1, k2, size, p, l, t_c,
                              bw, t_local, REAL_LATENCY, two_stage=method != "kavg", **extra)
                cells.append(f"{1e3 * t:.0f} ({sync / t:.2f}x; {overlap / t:.2f}x)")
            lines.append(f"| {model}, {1e3 * t_c:.0f} ms | {link} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)
