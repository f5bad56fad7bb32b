"""Hier-AVG against Horovod and PyTorch on a simulated two-node cluster with a slow link.

    sudo .venv/bin/python benchmarks/cluster/bench_network.py            # make bench-network
    sudo .venv/bin/python benchmarks/cluster/bench_network.py --smoke    # a minute, tiny model

Builds the cluster of ``netns.py`` (``--nodes`` namespaces of ``--ranks-per-node`` ranks, each
node's uplink shaped to the rate), and for every rate in ``--rates`` runs every method of
``worker.py`` on the same model, data, learning rate and network, one after the other,
in ``--repeats`` rounds (A B C A B C ...; the machine's speed drifts, and a drift then falls
on every method alike):
compute only, synchronous Horovod (``hvd.DistributedOptimizer``), hvd_hier as K-AVG (S=1,
K=K1*K2) and as Hier-AVG (S = ranks per node) for each ``--schedules`` K1xK2, and PyTorch's
``HierarchicalModelAverager`` + ``PostLocalSGDOptimizer`` for the same schedules.

Writes to ``--out-dir``: ``runs/*.json`` (each run's raw figures; round k > 0 as
``<rate>_<name>_r<k>.json``), ``results.json`` (each method's run of median step time, with
every round's mean step in ``repeat_steps``),
``table.md`` (the targets of ``targets.py``, met or missed, with their figures; step time,
ratio to synchronous Horovod, link bytes against the analytic value,
share of time in local and global averaging; the cost model's prediction next to the measured
step time, and its prediction for a real cluster) and ``step_time_vs_bandwidth.png``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from costmodel import (Fit, global_link_bytes, is_gathered, predict_step,  # noqa: E402
                       real_cluster_table, ring, run_compute, two_stage)
from launch import launch  # noqa: E402
from netns import Cluster, can_create_namespaces, parse_rate, raise_on_signals  # noqa: E402
import targets  # noqa: E402


def parse_schedules(text: str):
    out = []
    for item in text.split(","):
        try:
            k1, k2 = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--schedules: each item is K1xK2 (e.g. 1x8), got {item!r}")
        if k1 < 1 or k2 < 1:
            raise SystemExit(f"--schedules: K1 and K2 must be >= 1, got {item!r}")
        out.append((k1, k2))
    return out


# Hier-AVG variants: method name -> (global compression, overlapped, fragments). Overlapped
# runs use overlap_steps = K1*K2/F - 1, the most a schedule allows.
HIER_METHODS = {"hier": (None, False, 1), "hier_bf16": ("bf16", False, 1),
                "hier_int8": ("int8", False, 1), "hier_overlap": (None, True, 1),
                "hier_bf16_overlap": ("bf16", True, 1), "hier_int8_overlap": ("int8", True, 1),
                "hier_int4": ("int4", False, 1), "hier_int2": ("int2", False, 1),
                "hier_topk": ("topk0.02_int2", False, 1), "hier_frag4": (None, False, 4),
                "hier_int8_frag4": ("int8", False, 4)}


def runs_for(schedules, methods):
    """(name, method, k1, k2, codec, overlap_steps, fragments) in the order they run at each
    rate."""
    out = []
    if "compute" in methods:
        out.append(("compute", "compute", 1, 1, None, 0, 1))
    if "sync" in methods:
        out.append(("sync", "sync", 1, 1, None, 0, 1))
    if "plan" in methods:  # python -m hvd_hier.plan in the cluster (after compute: its t_c)
        out.append(("plan", "plan", 1, 1, None, 0, 1))
    if "raw" in methods:
        out += [("raw_horovod", "raw_horovod", 1, 1, None, 0, 1),
                ("raw_torch", "raw_torch", 1, 1, None, 0, 1)]
    for k1, k2 in schedules:
        if "kavg" in methods:
            out.append((f"kavg_K{k1 * k2}", "kavg", k1, k2, None, 0, 1))
        for m, (codec, overlapped, f) in HIER_METHODS.items():
            if m in methods:
                if k2 % f:
                    continue  # F must divide K2 (period/F a multiple of K1)
                d = k1 * k2 // f - 1 if overlapped else 0
                if overlapped and d == 0:
                    continue  # K1*K2 = 1 leaves no step to overlap
                out.append((f"hier_{k1}x{k2}" + (f"_{codec}" if codec else "")
                            + (f"_frag{f}" if f > 1 else "") + (f"_ov{d}" if d else ""),
                            "hier", k1, k2, codec, d, f))
        if "torch" in methods:
            out.append((f"torch_{k1}x{k2}", "torch", k1, k2, None, 0, 1))
    seen, unique = set(), []
    for run in out:  # K-AVG with the same K1*K2 from two schedules is one run
        if run[0] not in seen:
            seen.add(run[0])
            unique.append(run)
    return unique


def rounds(plan, repeats: int):
    """(round, run) in the order they run at one rate: every method once per round, the rounds
    one after the other (A B C A B C ...), so that a drift of the machine's speed falls on all
    methods alike; the planner and the raw collectives only in the first round."""
    for rnd in range(repeats):
        for run in plan:
            if rnd == 0 or run[1] not in ("plan", "raw_horovod", "raw_torch"):
                yield rnd, run


def run_path(out: Path, rate: str, name: str, rnd: int) -> Path:
    return out / "runs" / (f"{rate}_{name}.json" if rnd == 0 else f"{rate}_{name}_r{rnd}.json")


def combine(results: List[Dict]) -> List[Dict]:
    """The repeats of each (rate, name) as one run: the repeat of median mean step (of the two
    middle ones, the faster), with every repeat's mean step in ``repeat_steps`` (round order)
    and their number in ``repeats``. Runs without a summary (planner, raw) pass as they are."""
    groups: Dict = {}
    for r in results:
        groups.setdefault((r["rate"], r["name"]), []).append(r)
    out = []
    for runs in groups.values():
        if "summary" not in runs[0]:
            out += runs
            continue
        runs = sorted(runs, key=lambda r: r.get("repeat", 0))
        steps = [r["summary"]["mean_step"] for r in runs]
        middle = sorted(range(len(runs)), key=lambda i: steps[i])[(len(runs) - 1) // 2]
        out.append(dict(runs[middle], repeat_steps=steps, repeats=len(runs)))
    return out


LABELS = {"compute": "compute only (no communication; plot: median)", "sync": "Horovod sync (DistributedOptimizer)",
          "raw_horovod": "hvd.allreduce_ (Horovod's engine)",
          "raw_torch": "torch.distributed.all_reduce (PyTorch's Gloo)"}


def label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    kind, rest = name.split("_", 1)
    if kind == "kavg":
        return f"hvd_hier K-AVG K={rest[1:]}"
    schedule, *extra = re.sub(r"(topk[0-9.]+)_", r"\1:", rest).split("_")
    k1, k2 = schedule.split("x")
    if kind != "hier":
        return f"PyTorch HierarchicalModelAverager K1={k1} K2={k2}"
    words = [f"overlap {e[2:]}" if e.startswith("ov") else
             f"{e[4:]} fragments" if e.startswith("frag") else e.replace(":", "_")
             for e in extra]
    return f"hvd_hier Hier-AVG K1={k1} K2={k2}" + "".join(f" + {w}" for w in words)


def analytic_link_bytes(run: Dict) -> float:
    """Payload bytes each node's uplink sends (and receives) for this run's global reductions.

    A ring allreduce over P ranks sends 2(P-1)/P times the payload from each rank to the next;
    with the ranks placed node by node, exactly one edge of the ring leaves each node. Local
    reductions stay inside the node. Synchronous Horovod reduces the gradients (the
    parameters' size) every step; hvd_hier averages parameters and floating buffers; PyTorch's
    averager the parameters. A compressed hvd_hier run: ``costmodel.global_link_bytes`` of
    its encoded bytes per global reduction."""
    ring_factor = ring(run["size"])
    if run["method"] == "sync":
        return ring_factor * run["params_bytes"] * run["steps"]
    if run["method"] == "compute":
        return 0.0
    staged = two_stage(run)
    f = run.get("fragments", 1)  # F reductions of 1/F of the model per period
    if run.get("compression"):  # hvd_hier's alltoall + allgather of encoded deltas
        encoded = run.get("encoded_bytes") or run["global_bytes_per_average"]
        return global_link_bytes(0, run["size"], run["ranks_per_node"], encoded / f, staged,
                                 is_gathered(run["compression"])) * run["global_averages"]
    size = run["params_bytes"] if run["method"] == "torch" else run["payload_bytes"]
    return global_link_bytes(size / f, run["size"], run["ranks_per_node"],
                             two_stage=staged) * run["global_averages"]


def summarize(run: Dict) -> Dict:
    times = sorted(run["step_seconds"])
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    mean = run["total_seconds"] / run["steps"]
    link = [v["tx"] for v in run["node_bytes"].values()]
    expected = analytic_link_bytes(run)
    total = run["total_seconds"]
    return {
        "mean_step": mean, "median_step": statistics.median(times), "p10": q(0.1),
        "p90": q(0.9), "per_100_steps": 100 * mean,
        "link_bytes": statistics.mean(link), "analytic_bytes": expected,
        "link_ratio": statistics.mean(link) / expected if expected else None,
        "share_local": run["seconds_local"] / total, "share_global": run["seconds_global"] / total,
        # the most a node's uplink sent in one step (runs from before it was recorded: None)
        "peak_step_bytes": run.get("peak_step_tx"),
    }


def fmt_bytes(b: float) -> str:
    return f"{b / 1e6:.1f} MB" if b >= 1e5 else f"{b / 1e3:.1f} kB"


def table(results: List[Dict], rates: List[str], fit_by_rate: Dict[str, Fit]) -> str:
    lines = []
    for rate in rates:
        rows = [r for r in results if r["rate"] == rate and "summary" in r]
        sync = next((r for r in rows if r["name"] == "sync"), None)
        lines += [f"### {rate}", "",
                  "| method | step mean (repeats' range) | median (p10-p90) | per 100 steps | vs sync | "
                  "link bytes / node | analytic | measured/analytic | local / global share | "
                  "computation | cost model |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            s = r["summary"]
            ratio = (targets.ratio_text(sync, r) if sync and r["name"] != "sync"
                     else "1" if r["name"] == "sync" else "")
            steps = r.get("repeat_steps") or [s["mean_step"]]
            spread = (f" ({1e3 * min(steps):.0f}-{1e3 * max(steps):.0f})" if len(steps) > 1
                      else "")
            link_ratio = f"{s['link_ratio']:.3f}" if s["link_ratio"] else "-"
            model = predict_step(r, fit_by_rate[rate]) if rate in fit_by_rate else None
            own = run_compute(r)
            lines.append(
                f"| {label(r['name'])} | {1e3 * s['mean_step']:.0f}{spread} ms | "
                f"{1e3 * s['median_step']:.0f} ({1e3 * s['p10']:.0f}-{1e3 * s['p90']:.0f}) ms | "
                f"{s['per_100_steps']:.1f} s | {ratio} | {fmt_bytes(s['link_bytes'])} | "
                f"{fmt_bytes(s['analytic_bytes'])} | {link_ratio} | "
                f"{100 * s['share_local']:.0f}% / {100 * s['share_global']:.0f}% | "
                f"{'' if own is None else f'{1e3 * own:.0f} ms'} | "
                f"{'' if model is None else f'{1e3 * model:.0f} ms'} |")
        lines.append("")
        raw = [r for r in results if r["rate"] == rate and r["method"].startswith("raw_")]
        if raw:
            lines += [f"One allreduce (Sum) of {raw[0]['bytes'] / 1e6:.1f} MB by each library's "
                      "collective engine alone, median (min-max) of "
                      f"{raw[0]['steps']}:", "",
                      "| engine | within a node | across all ranks |", "|---|---:|---:|"]
            for r in raw:
                cells = []
                for kind in ("local", "global"):
                    v = r[f"{kind}_seconds"]
                    cells.append(f"{1e3 * statistics.median(v):.0f} ({1e3 * min(v):.0f}-"
                                 f"{1e3 * max(v):.0f}) ms")
                lines.append(f"| {label(r['name'])} | {cells[0]} | {cells[1]} |")
            lines.append("")
    return "\n".join(lines)


# plot styles: (color, line style, marker) by method family; overlapped runs: dash-dot
_STYLE = {"compute": ("0.5", ":", "."), "sync": ("black", "-", "o"), "kavg": ("tab:brown", "-", "v"),
          "torch": ("tab:red", "--", "D"), "hier": ("tab:blue", "-", "o"),
          "bf16": ("tab:green", "-", "o"), "int8": ("tab:purple", "-", "o")}


def _family(name: str) -> str:
    if name in ("compute", "sync") or name.split("_")[0] in ("kavg", "torch"):
        return name.split("_")[0]
    return next((c for c in ("bf16", "int8") if f"_{c}" in name), "hier")


def plot(results: List[Dict], rates: List[str], path: Path) -> None:
    """One panel per K1xK2 schedule: compute only, synchronous Horovod and K-AVG (same K1*K2)
    in every panel, then the schedule's hvd_hier variants and PyTorch's averager."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bits = {r: parse_rate(r) for r in rates}
    names = []
    for r in results:
        if r["name"] not in names and r["name"] != "plan" and not r["name"].startswith("raw_"):
            names.append(r["name"])
    schedules = []
    for r in results:
        if r["method"] in ("hier", "torch") and (r["k1"], r["k2"]) not in schedules:
            schedules.append((r["k1"], r["k2"]))
    schedules = schedules or [None]
    fig, axes = plt.subplots(1, len(schedules), figsize=(6 * len(schedules), 5.2), sharey=True,
                             squeeze=False)
    for ax, schedule in zip(axes[0], schedules):
        for name in names:
            run = next(r for r in results if r["name"] == name)
            if schedule is not None and run["method"] in ("hier", "torch") and \
                    (run["k1"], run["k2"]) != schedule:
                continue
            if schedule is not None and run["method"] == "kavg" and \
                    run["k1"] * run["k2"] != schedule[0] * schedule[1]:
                continue
            key = "median_step" if name == "compute" else "mean_step"  # the floor: its median
            pts = sorted((bits[r["rate"]] / 1e6, 1e3 * r["summary"][key])
                         for r in results if r["name"] == name and bits[r["rate"]])
            if not pts:
                continue
            color, style, marker = _STYLE[_family(name)]
            if "_ov" in name:
                style, marker = "-.", "s"
            text = label(name)
            if schedule is not None and run["method"] in ("hier", "torch"):
                text = text.replace(f" K1={schedule[0]} K2={schedule[1]}", "")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=style, marker=marker,
                    color=color, label=text)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("inter-node link (Mbit/s per node, each direction)")
        if schedule is not None:
            ax.set_title(f"K1={schedule[0]} K2={schedule[1]}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[0][0].set_ylabel("wall time per step (ms, mean)")
    first = next(r for r in results if "params_bytes" in r)
    fig.suptitle(f"{first['nodes']} nodes x {first['ranks_per_node']} ranks, {first['model']} "
                 f"({first['params_bytes'] / 1e6:.1f} MB of parameters)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="100mbit,1gbit,10gbit")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--ranks-per-node", type=int, default=2)
    p.add_argument("--schedules", default="1x8,4x2", help="K1xK2 list for kavg, hier, torch")
    p.add_argument("--methods", default="compute,plan,sync,raw,kavg," + ",".join(HIER_METHODS)
                   + ",torch",
                   help="plan: python -m hvd_hier.plan's predictions, checked against the "
                        "hvd_hier runs; "
                        "raw: each library's allreduce alone (explains the averaging times); "
                        "hier_bf16, hier_int8, hier_int4, hier_int2, hier_topk (2%% in 2-bit "
                        "values): Hier-AVG with the global level's deltas encoded; *_frag4: the "
                        "global level in 4 streaming fragments; *_overlap: the global reduction "
                        "overlapped with K1*K2 - 1 steps")
    p.add_argument("--packed", action="store_true",
                   help="hvd_hier without flat storage (default: flat_storage=True)")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds of every method at each rate, alternated (A B C A B C ...): "
                        "each method's run of median step time is reported, and ratios as "
                        "the median of the ratios round by round, with their range")
    p.add_argument("--model", default="resnet18", choices=["resnet18", "tiny"])
    p.add_argument("--image-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    p.add_argument("--out-dir", default="bench_network")
    p.add_argument("--python", type=shlex.split, default=[sys.executable],
                   help="how each rank starts Python: a command line, split as a shell "
                        "would (default: this interpreter)")
    p.add_argument("--prefix", default="hvdh",
                   help="namespace names: <prefix>-n<i>, <prefix>-sw (left-overs are removed)")
    p.add_argument("--report-only", action="store_true",
                   help="no runs: tabulate and plot the runs in --out-dir/runs")
    p.add_argument("--smoke", action="store_true",
                   help="the harness check: tiny model, 8 steps, 1gbit, schedule 1x4, the "
                        "methods of each kind")
    args = p.parse_args(argv)
    if args.smoke:
        args.model, args.steps, args.rates, args.schedules = "tiny", 8, "1gbit", "1x4"
        args.repeats = 1
        args.methods = ("compute,plan,sync,raw,kavg,hier,hier_bf16,hier_int8,hier_int8_overlap,"
                        "hier_topk,hier_int8_frag4,torch")
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    rates = args.rates.split(",")
    for r in rates:
        try:
            if parse_rate(r) is None:
                raise ValueError("unlimited")
        except ValueError as e:
            raise SystemExit(f"--rates: {e}")
    schedules = parse_schedules(args.schedules)
    methods = set(args.methods.split(","))
    unknown = methods - {"compute", "plan", "sync", "raw", "kavg", "torch", *HIER_METHODS}
    if unknown:
        raise SystemExit(f"--methods: unknown {sorted(unknown)}")
    out = Path(args.out_dir)
    plan = runs_for(schedules, methods)
    if args.report_only:
        results = []
        for rate in rates:
            for rnd, (name, *_) in rounds(plan, args.repeats):
                path = run_path(out, rate, name, rnd)
                if path.exists():
                    results.append(json.loads(path.read_text()))
                elif rnd == 0:  # a folder of fewer rounds reports the rounds it has
                    raise SystemExit(f"--report-only: {path} is missing")
    else:
        results = measure(args, rates, plan, out)
    for run in results:
        if not run["method"].startswith("raw_") and run["method"] != "plan":
            run["summary"] = summarize(run)
    results = combine(results)
    report(args, rates, results, out)
    return results


def run_planner(args, cluster, rate, plan, results, path, link_bw, out) -> Dict:
    """``python -m hvd_hier.plan`` on the cluster, as a user would run it, given the compute
    run's median step and the model's payload, for the hvd_hier settings of ``plan``."""
    compute = next((r for r in results if r["rate"] == rate and r["method"] == "compute"), None)
    if compute is None:
        raise SystemExit("--methods: plan needs compute (the computation per step it is given)")
    t_c = statistics.median(compute["step_seconds"])
    payload = compute.get("payload_bytes")
    hier = [run for run in plan if run[1] == "hier"]
    periods = sorted({k1 * k2 for _, _, k1, k2, *_ in hier}) or [8]
    codecs = ["none"] + sorted({run[4] for run in hier if run[4]})
    fragments = sorted({run[6] for run in hier} | {1})
    cmd = [*args.python, "-m", "hvd_hier.plan", "--model-mb", f"{payload / 1e6:.6f}",
           "--compute-ms", f"{1e3 * t_c:.3f}", "--periods", ",".join(map(str, periods)),
           "--codecs", ",".join(codecs), "--fragments", ",".join(map(str, fragments)),
           "--repeats", "5", "--rows", "0", "--json", str(path)]
    launch(cluster, args.ranks_per_node, cmd, backend="horovod", env={"OMP_NUM_THREADS": "1"},
           timeout=args.timeout, log_dir=str(out / "logs" / f"{rate}_plan"))
    run = json.loads(path.read_text())
    run.update(name="plan", method="plan", rate=rate, rate_bits=parse_rate(rate),
               link_throughput=link_bw)
    path.write_text(json.dumps(run, indent=1))
    c = run["cluster"]
    print(f"{rate:>8} {'python -m hvd_hier.plan':<45} local averaging "
          f"{1e3 * c['t_local']:.0f} ms, uplink {c['b_inter'] / 1e6:.1f} MB/s, latency "
          f"{1e3 * c['latency']:.1f} ms", flush=True)
    return run


def planner_prediction(results: List[Dict], run: Dict, own_compute: bool = True
                       ) -> Optional[float]:
    """The planner's step time for an hvd_hier run, from the figures ``python -m hvd_hier.plan``
    measured at its rate: as it printed them (given the compute-only run's median step), or
    (``own_compute``) given the run's own computation per step instead."""
    from hvd_hier.plan import cli as planner

    planned = next((r for r in results if r["rate"] == run["rate"] and r["method"] == "plan"),
                   None)
    if planned is None or run["method"] != "hier":
        return None
    figures = dict(planned["cluster"])
    if own_compute:
        figures["t_compute"] = run_compute(run) or figures["t_compute"]
    cluster = planner.Cluster(**figures)
    setting = planner.Setting(run["k1"], run["k2"], run.get("compression"),
                              run.get("overlap_steps", 0), run.get("fragments", 1))
    (p,) = planner.predict(cluster, planned["size_bytes"], [setting],
                           two_stage=cluster.two_stage)
    return p.step


def planner_table(results: List[Dict], rates: List[str]) -> str:
    """Markdown: each hvd_hier run's step time beside the planner's prediction for it, as the
    planner printed it and given the run's own computation."""
    lines = []
    for rate in rates:
        for r in results:
            if r["rate"] != rate or r["method"] != "hier" or "summary" not in r:
                continue
            printed = planner_prediction(results, r, own_compute=False)
            if printed is None:
                continue
            if not lines:
                lines = ["## The planner's predictions", "",
                         "`python -m hvd_hier.plan` run on the cluster before the training runs, "
                         "given the compute-only run's median step; it measures a local "
                         "averaging, the uplink, the latency and a compressed global reduction "
                         "itself. Beside it, the same figures given each run's own computation "
                         "per step (the cores' speed drifts between runs).", "",
                         "| rate | setting | predicted | measured | measured / predicted | "
                         "own computation | predicted with it | measured / predicted |",
                         "|---|---|---:|---:|---:|---:|---:|---:|"]
            measured = r["summary"]["mean_step"]
            own = planner_prediction(results, r)
            lines.append(f"| {rate} | {label(r['name'])[len('hvd_hier Hier-AVG '):]} | "
                         f"{1e3 * printed:.0f} ms | {1e3 * measured:.0f} ms | "
                         f"{measured / printed:.2f} | {1e3 * run_compute(r):.0f} ms | "
                         f"{1e3 * own:.0f} ms | {measured / own:.2f} |")
    return "\n".join(lines + [""]) if lines else ""


def measure(args, rates, plan, out: Path) -> List[Dict]:
    why = can_create_namespaces()
    if why:
        raise SystemExit(f"bench_network: cannot build the simulated cluster: {why}")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    python = args.python
    results = []
    raise_on_signals()
    with Cluster(args.nodes, rates[0], prefix=args.prefix) as cluster:
        for rate in rates:
            cluster.set_rate(rate)
            # one TCP stream node 0 -> node 1, about 2 s of traffic: the measured B_inter
            link_bw = cluster.throughput(0, 1, min(256 << 20, max(4 << 20, parse_rate(rate) // 4)))
            print(f"{rate:>8} one TCP stream between nodes: {link_bw / 1e6:.1f} MB/s", flush=True)
            for rnd, (name, method, k1, k2, codec, overlap_steps, fragments) in rounds(
                    plan, args.repeats):
                path = run_path(out, rate, name, rnd)
                if method == "plan":
                    results.append(run_planner(args, cluster, rate, plan, results, path,
                                               link_bw, out))
                    continue
                # raw collectives: a quarter as many repetitions (each is a whole allreduce)
                steps = max(4, args.steps // 4) if method.startswith("raw_") else args.steps
                cmd = [*python, str(HERE / "worker.py"), "--method", method, "--k1", str(k1),
                       "--k2", str(k2), "--steps", str(steps), "--model", args.model,
                       "--image-size", str(args.image_size), "--batch-size",
                       str(args.batch_size), "--out", str(path)]
                if method in ("kavg", "hier") and not args.packed and fragments == 1:
                    cmd.append("--flat-storage")  # (fragments take no flat storage)
                if codec:
                    cmd += ["--global-compression", codec]
                if fragments > 1:
                    cmd += ["--global-fragments", str(fragments)]
                if overlap_steps:
                    cmd += ["--overlap-steps", str(overlap_steps)]
                t0 = time.perf_counter()
                launch(cluster, args.ranks_per_node, cmd,
                       backend="torch" if method in ("torch", "raw_torch") else "horovod",
                       env={"OMP_NUM_THREADS": "1"}, timeout=args.timeout,
                       log_dir=str(out / "logs" / f"{rate}_{name}"))
                run = json.loads(path.read_text())
                run.update(name=name, rate=rate, rate_bits=parse_rate(rate),
                           link_throughput=link_bw, repeat=rnd)
                path.write_text(json.dumps(run, indent=1))  # --report-only reads it back
                results.append(run)
                if method.startswith("raw_"):
                    print(f"{rate:>8} {label(name):<45} local "
                          f"{1e3 * statistics.median(run['local_seconds']):6.0f} ms  global "
                          f"{1e3 * statistics.median(run['global_seconds']):6.0f} ms  "
                          f"[{time.perf_counter() - t0:.0f} s]", flush=True)
                    continue
                s = summarize(run)
                print(f"{rate:>8} {label(name):<45} {1e3 * s['mean_step']:8.0f} ms/step  "
                      f"link {fmt_bytes(s['link_bytes']):>9} (analytic "
                      f"{fmt_bytes(s['analytic_bytes'])})  [{time.perf_counter() - t0:.0f} s]",
                      flush=True)
    return results


def report(args, rates, results: List[Dict], out: Path) -> None:
    fits = {rate: Fit.from_runs([r for r in results if r["rate"] == rate]) for rate in rates}
    fits = {k: v for k, v in fits.items() if v is not None}
    first = next(r for r in results if "params_bytes" in r)
    checked = targets.check(results, lambda r: predict_step(r, fits[r["rate"]])
                            if r["rate"] in fits else None,
                            lambda r: planner_prediction(results, r, own_compute=False))
    text = ("# Network benchmark\n\n"
            f"{first['nodes']} nodes x {first['ranks_per_node']} ranks, model {first['model']} "
            f"({first['params_bytes'] / 1e6:.1f} MB of parameters), batch "
            f"{first['batch_size']} of {first['image_size']}x{first['image_size']} synthetic "
            f"images, {first['steps']} timed steps per run, {args.repeats} round(s) of every "
            f"method alternated; hvd_hier with "
            f"{'packed buckets' if args.packed else 'flat_storage=True'}.\n\n"
            + targets.markdown(checked) + "\n" + table(results, rates, fits) + "\n"
            + planner_table(results, rates) + "\n"
            + real_cluster_table(results, fits))
    (out / "table.md").write_text(text)
    (out / "results.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k not in ("step_seconds", "step_kinds")} for r in results],
        indent=1))
    plot(results, rates, out / "step_time_vs_bandwidth.png")
    print("\n" + text)
    print(f"wrote {out / 'table.md'}, {out / 'results.json'}, "
          f"{out / 'step_time_vs_bandwidth.png'}")


if __name__ == "__main__":
    main()
