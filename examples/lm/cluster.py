"""Wall-clock to a target loss on the simulated two-node cluster (``benchmarks/cluster``; root).

``sweep.py --preset cluster`` (and ``--preset cluster-smoke``) call ``run``: the cluster's
nodes are network namespaces with a shaped uplink each, and every method trains the same GPT on
the same tokens there, at each rate of the preset, as the quality sweep does on one host.

* **The target** is synchronous SGD's validation loss at half the step budget, read from one
  run of sync to the end of the budget (``target.json``): a fixed value that sync reaches.
  The training does not depend on the rate (one seed, the same reductions), so the target
  holds at every rate.
* **Rounds.** At each rate every method runs ``repeats`` times, alternated (A B C A B C ...),
  each run stopping at its first evaluation at or below the target (``--target-bpb``) or at
  the end of the budget. A run's time to target is its training time then (evaluations are
  not counted; the same for every method).
* The runs are ``runs/<rate>_<method>_r<round>.json``; finished ones are reused. A progress bar
  follows each run's rank 0.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
CLUSTER = HERE.parents[1] / "benchmarks" / "cluster"
sys.path.insert(0, str(HERE))
from report import (link_bytes, paired_ratios, step_seconds, steps_to_target,  # noqa: E402
                    time_to_target)


def _follow(path: Path, on_line, stop: threading.Event):
    """Hand each new line of ``path`` to ``on_line`` until ``stop`` is set."""
    offset = 0
    while not stop.is_set():
        try:
            with open(path, errors="replace") as f:
                f.seek(offset)
                for line in f:
                    on_line(line)
                offset = f.tell()
        except FileNotFoundError:
            pass
        stop.wait(1.0)


GLOO_TIMEOUT = "Timed out waiting 30000ms for"
ATTEMPTS = 3  # launches of one run at the most


def retried(error: str) -> bool:
    """Whether a failed launch is started once more (see ``_train``)."""
    return error.startswith("timeout after") or GLOO_TIMEOUT in error


def failed_logs(logs: Path, n: int) -> Path:
    """Where the logs of a run's n-th failed launch are kept, beside the run's own."""
    return logs.with_name(f"{logs.name}.attempt{n}")


def failed_launches(logs: Path) -> int:
    """How many launches of a run failed, in this sweep and any before it (their logs kept)."""
    n = 0
    while failed_logs(logs, n + 1).exists():
        n += 1
    return n


def _train(cluster, launch, preset, config, argv, path: Path, progress, timeout, python):
    """One run on the cluster (``argv``: train_lm.py's arguments; each rank started with the
    command ``python``), its JSON moved to ``path``."""
    from launch import LaunchError

    part = path.with_name(path.name + ".part")
    logs = path.parent.parent / "logs" / path.stem
    cmd = [*python, str(HERE / "train_lm.py"), *argv, "--seed", "0", "--no-progress",
           "--out", str(part)]
    timeout = preset.get("run_timeout", timeout)
    for attempt in range(1, ATTEMPTS + 1):
        progress.start(path.stem, 1)
        stop = threading.Event()
        follower = threading.Thread(target=_follow, args=(logs / "rank0.log", progress.line,
                                                          stop), daemon=True)
        follower.start()
        try:
            launch(cluster, preset["node"], cmd,
                   backend="torch" if config.algo == "torch" else "horovod",
                   env={"OMP_NUM_THREADS": "1"}, timeout=timeout, log_dir=str(logs))
            break
        except LaunchError as e:
            # Started again (up to ATTEMPTS launches a sweep), every launch counted in the
            # run's JSON and each failed one's logs kept beside, never overwritten: a job that
            # never got going (seen once in a while on these loaded cores: the ranks of one
            # node silent while the other's waited in hvd.add_process_set), and one whose Gloo
            # transfer timed out (one rank of a global collective waiting to receive what the
            # others never sent: seen in hvd_hier runs of the fewer-bits sweep, never in
            # sync's or PyTorch's; docs/LM.md).
            if attempt == ATTEMPTS or not retried(str(e)):
                raise
            os.replace(logs, failed_logs(logs, failed_launches(logs) + 1))
            print(f"{path.stem}: {str(e).splitlines()[0]}; started again", flush=True)
        finally:
            stop.set()
            follower.join()
            progress.close()
    os.replace(part, path)
    # every launch of this run, an earlier sweep's failed ones included (their logs are kept)
    run = dict(json.loads(path.read_text()), attempts=failed_launches(logs) + 1)
    path.write_text(json.dumps(run, indent=1))
    return run


def run(preset, out_dir: Path, sync, configs, common: List[str], timeout: float, prefix: str,
        progress, python: List[str]) -> float:
    """Every round of every method at every rate (see the module doc). Returns the target."""
    sys.path.insert(0, str(CLUSTER))
    from launch import launch
    from netns import Cluster, can_create_namespaces, raise_on_signals

    why = can_create_namespaces()
    if why:
        raise SystemExit(f"the cluster sweep needs the simulated cluster: {why}")
    runs = out_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    rates, train = preset["rates"], [*preset["train"], *common]
    raise_on_signals()
    with Cluster(2, rates[-1], prefix=prefix) as cluster:
        target = _target(cluster, launch, preset, sync, train, out_dir, progress, timeout,
                         python)
        for rate in rates:
            cluster.set_rate(rate)
            for rnd in range(preset["repeats"]):
                for config in configs:
                    path = runs / f"{rate}_{config.name}_r{rnd}.json"
                    if path.exists():
                        continue
                    t0 = time.perf_counter()
                    r = _train(cluster, launch, preset, config,
                               [*train, *config.train_args(), "--target-bpb", repr(target)],
                               path, progress, timeout, python)
                    reached = time_to_target(r, target)
                    print(f"{rate:>8} round {rnd} {config.label:<55} "
                          + (f"target after {steps_to_target(r, target)} steps, {reached:.1f} s"
                             if reached is not None else f"target not reached in {r['steps']} steps")
                          + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    return target


def _target(cluster, launch, preset, sync, train, out_dir: Path, progress, timeout,
            python) -> float:
    """Sync's validation loss at half the budget (one run of sync to the end, at the fastest
    rate; kept in target.json)."""
    path = out_dir / "target.json"
    if path.exists():
        return json.loads(path.read_text())["target_bpb"]
    ref = _train(cluster, launch, preset, sync, [*train, *sync.train_args()],
                 out_dir / "runs" / "reference_sync.json", progress, timeout, python)
    half = ref["args"]["steps"] // 2
    row = min(ref["evals"], key=lambda e: abs(e["steps"] - half))
    target = row["val_bpb"]
    path.write_text(json.dumps({
        "target_bpb": target, "steps": row["steps"],
        "what": f"synchronous SGD's validation loss at step {row['steps']} of "
                f"{ref['args']['steps']} (half the budget), the same training"}, indent=1))
    return target


def load(out_dir: Path, preset, configs) -> Dict[str, Dict[str, List[Dict]]]:
    """``by_rate[rate][method]``: the rounds' runs, each with its ``round``."""
    by_rate: Dict[str, Dict[str, List[Dict]]] = {}
    for rate in preset["rates"]:
        for c in configs:
            for rnd in range(preset["repeats"]):
                p = out_dir / "runs" / f"{rate}_{c.name}_r{rnd}.json"
                if p.exists():
                    by_rate.setdefault(rate, {}).setdefault(c.name, []).append(
                        dict(json.loads(p.read_text()), round=rnd))
    return by_rate


def table(by_rate, labels: Dict[str, str], target: float) -> str:
    """Markdown, per rate: each method's time to target (median over rounds, with the range),
    steps to target, step time, its ratio to sync's time, and the bytes its node's uplink sent
    while training (measured) against the formula."""
    lines = []
    for rate, runs in by_rate.items():
        sync = runs.get("sync")
        lines += [f"### {rate}", "",
                  "| method | time to target | steps to target | step | vs sync | "
                  "uplink bytes (measured / formula) | rounds |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, rs in runs.items():
            times = [time_to_target(r, target) for r in rs]
            if all(t is not None for t in times):
                cell = f"{statistics.median(times):.1f} s ({min(times):.1f}-{max(times):.1f})"
            else:
                cell = f"not reached in {sum(t is None for t in times)} of {len(times)}"
            steps = steps_to_target(rs[0], target)
            ratio = ""
            if sync and name != "sync":
                r = paired_ratios(sync, rs, lambda x: time_to_target(x, target))
                ratio = f"{statistics.median(r):.2f}x" if r else "-"
            last = rs[0]["evals"][-1]
            measured = last.get("node_tx")
            formula = link_bytes(rs[0], last)
            link = (f"{measured / 1e6:.1f} / {formula / 1e6:.1f} MB" if measured is not None
                    else f"- / {formula / 1e6:.1f} MB")
            lines.append(f"| {labels.get(name, name)} | {cell} | {steps or '-'} | "
                         f"{1e3 * statistics.median(step_seconds(r) for r in rs):.0f} ms | "
                         f"{ratio} | {link} | {len(rs)} |")
        lines.append("")
    return "\n".join(lines)


def plot(by_rate, labels: Dict[str, str], target: float, path: Path) -> None:
    """Validation loss against training time, one panel per rate (each method's first round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(by_rate), figsize=(6.5 * len(by_rate), 4.4), squeeze=False)
    for ax, (rate, runs) in zip(axes[0], by_rate.items()):
        for name, rs in runs.items():
            rows = rs[0]["evals"]
            ax.plot([e["seconds"] for e in rows], [e["val_bpb"] for e in rows], marker="o",
                    markersize=2.5, label=labels.get(name, name))
        ax.axhline(target, color="0.4", linestyle=":", label=f"target {target:.3f}")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_title(rate)
        ax.set_xlabel("training time (s)")
        ax.set_ylabel("validation loss (bits per byte)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
