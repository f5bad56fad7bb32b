"""Synchronous SGD vs K-AVG vs Hier-AVG: run a sweep through horovodrun, then plot and tabulate.

    python examples/compare.py --preset demo --out-dir demo_results
    python examples/compare.py --preset paper --out-dir results/mnist5k
    python examples/compare.py --preset outer --out-dir docs/results/outer      # outer, codecs
    python examples/compare.py --preset overlap --out-dir docs/results/overlap  # overlap_steps

Every configuration runs under one ``horovodrun -np P ... examples/train.py --seed 0,1,2``
(one run per seed, one start-up), each run writing ``runs/<name>_seed<k>.json``; seeds whose
JSON already exists are skipped, so an interrupted sweep resumes where it stopped. Then it writes, in ``--out-dir``:

* ``table.md``: final test accuracy (mean ± std over seeds), global and local reductions,
  bytes and training time per configuration (also printed);
* ``claims.md``: the three claims of the Hier-AVG paper, each with the numbers of this sweep;
* plots: ``accuracy_vs_epochs.png``, ``accuracy_vs_global_reductions.png``,
  ``accuracy_vs_time.png``, ``loss_vs_epochs.png``, and one figure per claim
  (``claim1_fewer_global_reductions.png``, ``claim2_same_global_reductions.png``,
  ``claim3_local_averaging.png``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Config:
    algo: str  # sync, kavg, hier, or torch (PyTorch's averager at the schedule of hier)
    k1: int = 1
    k2: int = 1
    s: int = 1
    outer: Optional[Tuple[float, float]] = None  # (lr, momentum): Nesterov SGD at the global level
    compression: Optional[str] = None  # the global level's codec
    overlap: int = 0  # the global level's overlap_steps
    lr: Optional[float] = None  # the inner learning rate, where it is not the preset's
    feedback: bool = True  # False: the global codec without error feedback
    fragments: int = 1  # the global level's fragments

    @property
    def name(self) -> str:
        if self.algo == "sync":
            base = "sync"
        elif self.algo == "kavg":
            base = f"kavg_K{self.k1 * self.k2}"
        else:
            base = f"{self.algo}_S{self.s}_K1{self.k1}_K2{self.k2}"
        return (base + (f"_outer{self.outer[0]:g}m{self.outer[1]:g}" if self.outer else "")
                + (f"_{self.compression}" if self.compression else "")
                + ("_noef" if not self.feedback else "")
                + (f"_frag{self.fragments}" if self.fragments > 1 else "")
                + (f"_ov{self.overlap}" if self.overlap else "")
                + (f"_lr{self.lr:g}" if self.lr is not None else ""))

    @property
    def label(self) -> str:
        if self.algo == "sync":
            base = "sync SGD"
        elif self.algo == "kavg":
            base = f"K-AVG K={self.k1 * self.k2}"
        else:
            base = (f"{'PyTorch averager' if self.algo == 'torch' else 'Hier-AVG'} S={self.s} "
                    f"K1={self.k1} K2={self.k2}")
        return (base + (f" + outer lr={self.outer[0]:g} m={self.outer[1]:g}" if self.outer else "")
                + (f" + {self.compression}" if self.compression else "")
                + (" without error feedback" if not self.feedback else "")
                + (f" + {self.fragments} fragments" if self.fragments > 1 else "")
                + (f" + overlap {self.overlap}" if self.overlap else "")
                + (f", lr {self.lr:g}" if self.lr is not None else ""))

    def train_args(self):
        lr = ["--lr", f"{self.lr:g}"] if self.lr is not None else []
        if self.algo == "sync":
            return ["--algo", "sync", *lr]
        outer = (["--outer-lr", str(self.outer[0]), "--outer-momentum", str(self.outer[1])]
                 if self.outer else [])
        codec = ["--global-compression", self.compression] if self.compression else []
        overlap = ["--overlap-steps", str(self.overlap)] if self.overlap else []
        extra = (["--no-error-feedback"] if not self.feedback else []) + (
            ["--global-fragments", str(self.fragments)] if self.fragments > 1 else [])
        return ["--algo", self.algo, "--local-steps", str(self.k1), "--local-rounds",
                str(self.k2), *(["--group-size", str(self.s)] if self.algo != "kavg" else []),
                *outer, *codec, *overlap, *extra, *lr]


# Each preset: the training arguments shared by every run, and the configurations. The
# claims compare: hier (K1, K2) with kavg K=K1 (claim 1) and kavg K=K1*K2 (claim 2); hier
# with smaller K1 or larger S at the same global period (claim 3).
PRESETS = {
    "demo": {
        "np": 4, "seeds": 3,
        "train": ["--dataset", "digits", "--epochs", "6", "--lr", "0.05", "--batch-size", "16"],
        "configs": [Config("sync"), Config("kavg", 2, 1), Config("kavg", 2, 4),
                    Config("hier", 2, 4, 2), Config("hier", 1, 8, 2)],
        "claim1": ("hier_S2_K12_K24", "kavg_K2"), "claim2": ("hier_S2_K12_K24", "kavg_K8"),
        "claim3": ["kavg_K8", "hier_S2_K12_K24", "hier_S2_K11_K28"],
    },
    "paper": {
        "np": 8, "seeds": 3,
        "train": ["--dataset", "mnist5k", "--epochs", "12", "--lr", "0.05", "--batch-size", "16",
                  "--non-iid", "0.9", "--data-group-size", "1"],
        "configs": [Config("sync"), Config("kavg", 4, 1), Config("kavg", 4, 4),
                    Config("hier", 4, 4, 4), Config("hier", 4, 4, 2), Config("hier", 2, 8, 4),
                    Config("hier", 1, 16, 4)],
        "claim1": ("hier_S4_K14_K24", "kavg_K4"), "claim2": ("hier_S4_K14_K24", "kavg_K16"),
        "claim3": ["kavg_K16", "hier_S2_K14_K24", "hier_S4_K14_K24", "hier_S4_K12_K28",
                   "hier_S4_K11_K216"],
    },
}


# The outer optimizer at the global level (Nesterov SGD on the pseudo-gradient) against plain
# Hier-AVG at the same number of global reductions and at 2x and 4x fewer, and the global
# level's deltas compressed at the same schedule; paired by seed.
_PAPER_TRAIN = PRESETS["paper"]["train"]
_OUTER_GRID = [(0.7, 0.9), (1.0, 0.5), (0.5, 0.9)]
PRESETS["outer"] = {
    "np": 8, "seeds": 3, "train": _PAPER_TRAIN,
    "configs": [Config("hier", 4, k2, 4) for k2 in (4, 8, 16)] + [
        Config("hier", 4, k2, 4, outer) for k2 in (4, 8, 16) for outer in _OUTER_GRID] + [
        Config("hier", 4, 4, 4, compression=c) for c in ("bf16", "int8")],
    # (title, baseline, others): each other against the baseline, seed by seed
    "comparisons": [
        (f"{k2 // 4}x fewer global reductions than plain Hier-AVG K2=4, with an outer optimizer"
         if k2 > 4 else "The same global reductions, with an outer optimizer",
         "hier_S4_K14_K24", [Config("hier", 4, k2, 4, o).name for o in _OUTER_GRID]
         + ([Config("hier", 4, k2, 4).name] if k2 > 4 else []))
        for k2 in (4, 8, 16)] + [
        ("Compressed global reductions (the deltas in bf16 or int8), the same schedule",
         "hier_S4_K14_K24", ["hier_S4_K14_K24_bf16", "hier_S4_K14_K24_int8"])],
    "target_points": 0.3,
}

# The global reduction overlapped with the following K1*K2 - 1 steps, with and without int8
# deltas, against plain Hier-AVG at the same schedule: the sweep's K1=4 K2=4, and K1=1 K2=8
# (the network benchmark's schedule); paired by seed.
_OVERLAP_SCHEDULES = [(4, 4), (1, 8)]


def _overlap_variants(k1, k2):
    """Plain Hier-AVG (the baseline, first), overlapped, int8, int8 and overlapped."""
    return [Config("hier", k1, k2, 4, compression=c, overlap=d)
            for c, d in ((None, 0), (None, k1 * k2 - 1), ("int8", 0), ("int8", k1 * k2 - 1))]


PRESETS["overlap"] = {
    "np": 8, "seeds": 3, "train": _PAPER_TRAIN,
    "configs": [c for k1, k2 in _OVERLAP_SCHEDULES for c in _overlap_variants(k1, k2)],
    "comparisons": [
        (f"The global reduction overlapped with {k1 * k2 - 1} steps, and int8 deltas, "
         f"K1={k1} K2={k2}", base.name, [c.name for c in others])
        for k1, k2 in _OVERLAP_SCHEDULES for base, *others in [_overlap_variants(k1, k2)]],
    "target_points": 0.3,
}


def select(configs, only: Optional[str], noun: str = "configurations"):
    """The configurations named in ``only`` (``--only``: comma-separated names; None: all).
    An unknown name stops the sweep, naming it and what the preset has."""
    if not only:
        return configs
    wanted = set(only.split(","))
    unknown = wanted - {c.name for c in configs}
    if unknown:
        raise SystemExit(f"--only: unknown {noun} {sorted(unknown)}; this preset has "
                         f"{[c.name for c in configs]}")
    return [c for c in configs if c.name in wanted]


def run_configs(configs, runs: Path, seeds, command, timeout, quiet=False, on_line=None):
    """For each configuration, one launch for all of its seeds that have no result yet in
    ``runs`` (the script runs the seeds one after the other: the start-up is paid once).
    ``command(config, seeds, pattern)`` is the launch's argv; the script writes each seed's
    JSON to ``pattern`` with {seed} filled in, and a finished launch's files are renamed to
    ``<config.name>_seed<k>.json``: an interrupted sweep resumes where it stopped. The
    launch's output is echoed (not with ``quiet``) and handed line by line to ``on_line``."""
    runs.mkdir(parents=True, exist_ok=True)
    for i, config in enumerate(configs, 1):
        missing = [s for s in range(seeds) if not (runs / f"{config.name}_seed{s}.json").exists()]
        if not missing:
            print(f"[{i}/{len(configs)}] {config.label}: {seeds} seeds done before, skipped", flush=True)
            continue
        pattern = str(runs / f"{config.name}_seed{{seed}}.json.part")
        cmd = command(config, missing, pattern)
        print(f"[{i}/{len(configs)}] {config.label}, seeds {missing}: {shlex.join(cmd)}",
              flush=True)
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        t0 = time.perf_counter()
        code, tail = _run(cmd, env, timeout, quiet, on_line)
        if code != 0:
            raise SystemExit(f"run failed ({code}): {shlex.join(cmd)}\n{tail}")
        for s in missing:  # complete runs only: a killed sweep resumes cleanly
            os.replace(pattern.format(seed=s), runs / f"{config.name}_seed{s}.json")
        print(f"    {time.perf_counter() - t0:.0f} s", flush=True)


def _run(cmd, env, timeout, quiet, on_line):
    """Run ``cmd`` in its own session, its output read line by line; killed (with its
    children) after ``timeout`` seconds. Returns the exit code and the output's end."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    tail = collections.deque(maxlen=60)
    try:
        for line in proc.stdout:
            tail.append(line)
            if not quiet:
                sys.stdout.write(line)
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    finally:
        timer.cancel()
    if code == -signal.SIGKILL:
        tail.append(f"(killed after the timeout of {timeout} s)\n")
    return code, "".join(tail)


def run_sweep(preset, out_dir: Path, seeds, np_, extra, timeout, python, quiet):
    """Every configuration of the preset through train.py under horovodrun on this host."""
    horovodrun = str(Path(sys.executable).parent / "horovodrun")

    def command(config, missing, pattern):
        return [horovodrun, "-np", str(np_), "-H", f"localhost:{np_}", "--gloo", *python,
                str(HERE / "train.py"), *preset["train"], *config.train_args(),
                "--seed", ",".join(map(str, missing)), "--no-progress", *extra, "--out", pattern]

    run_configs(preset["configs"], out_dir / "runs", seeds, command, timeout, quiet)


def load_runs(preset, out_dir: Path, seeds):
    results = {}
    for config in preset["configs"]:
        runs = []
        for seed in range(seeds):
            path = out_dir / "runs" / f"{config.name}_seed{seed}.json"
            if path.exists():
                runs.append(json.loads(path.read_text()))
        if runs:
            results[config.name] = (config, runs)
    return results


def mean_std(values):
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def curve(runs, key):
    """Mean and std over seeds of `key` per epoch."""
    columns = list(zip(*[[e[key] for e in r["epochs"]] for r in runs]))
    return [mean_std(c) for c in columns]


def table(results) -> str:
    lines = ["| configuration | final test accuracy | global reductions | local reductions | "
             "bytes global | bytes local | train time (s) | seeds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (config, runs) in results.items():
        last = [r["epochs"][-1] for r in runs]
        acc, sd = mean_std(e["test_accuracy"] for e in last)
        t, tsd = mean_std(e["seconds"] for e in last)
        # a group of one counts its (empty) local averagings; nothing was reduced
        local = last[0]["local_averages"] if last[0]["bytes_local"] else 0
        lines.append(
            f"| {config.label} | {acc * 100:.2f} ± {sd * 100:.2f} % | {last[0]['global_averages']} | "
            f"{local} | {last[0]['bytes_global'] / 1e6:.1f} MB | "
            f"{last[0]['bytes_local'] / 1e6:.1f} MB | {t:.1f} ± {tsd:.1f} | {len(runs)} |")
    return "\n".join(lines) + "\n"


def final_acc(results, name):
    return mean_std(r["epochs"][-1]["test_accuracy"] for r in results[name][1])


def paired(results, base, other):
    """Mean and spread over seeds of other's final accuracy minus base's, seed by seed (the
    seeds both have), in points."""
    a = {r["args"]["seed"]: r["epochs"][-1]["test_accuracy"] for r in results[base][1]}
    b = {r["args"]["seed"]: r["epochs"][-1]["test_accuracy"] for r in results[other][1]}
    diffs = [(b[s] - a[s]) * 100 for s in sorted(set(a) & set(b))]
    return mean_std(diffs) + (len(diffs),)


def comparisons(preset, results) -> str:
    """Each comparison of the preset as a table: final accuracy, global reductions, and the
    paired difference from the baseline against the preset's target."""
    target = preset["target_points"]
    out = ["# Comparisons in this sweep", "",
           f"Differences are paired by seed (mean ± std over seeds); target: within {target} "
           "points of the baseline, or above it.", ""]
    for title, base, others in preset["comparisons"]:
        out += [f"## {title}", ""]
        if base not in results:
            out += [f"- not measured: no results for {base}", ""]
            continue
        acc, sd = final_acc(results, base)
        g = results[base][1][0]["epochs"][-1]["global_averages"]
        out += ["| configuration | final accuracy | global reductions | vs baseline (paired) | target |",
                "|---|---:|---:|---:|---|",
                f"| {results[base][0].label} (baseline) | {acc * 100:.2f} ± {sd * 100:.2f} % | {g} | — | — |"]
        for name in others:
            if name not in results:
                out.append(f"| {name} | not measured | | | |")
                continue
            acc, sd = final_acc(results, name)
            g = results[name][1][0]["epochs"][-1]["global_averages"]
            d, dsd, n = paired(results, base, name)
            met = "met" if d >= -target else f"missed by {-d - target:.2f}"
            out.append(f"| {results[name][0].label} | {acc * 100:.2f} ± {sd * 100:.2f} % | {g} | "
                       f"{d:+.2f} ± {dsd:.2f} ({n} seeds) | {met} |")
        out.append("")
    return "\n".join(out)


def claims(preset, results) -> str:
    if "comparisons" in preset:
        return comparisons(preset, results)
    out = ["# The paper's claims in this sweep", ""]

    def fmt(name):
        acc, sd = final_acc(results, name)
        last = results[name][1][0]["epochs"][-1]
        return (f"{results[name][0].label}: {acc * 100:.2f} ± {sd * 100:.2f} % after "
                f"{last['global_averages']} global reductions")

    def absent(title, names):
        missing = [n for n in names if n not in results]
        return [title, f"- not measured in this sweep: no results for {', '.join(missing)}", ""]

    def pair(title, names, with_ratio):
        hier, kavg = names
        if not (hier in results and kavg in results):
            return absent(title, [hier, kavg])
        (a, sa), (b, sb) = final_acc(results, hier), final_acc(results, kavg)
        summary = (f"accuracy difference {(a - b) * 100:+.2f} points (seed spread "
                   f"{max(sa, sb) * 100:.2f})")
        if with_ratio:
            g_h = results[hier][1][0]["epochs"][-1]["global_averages"]
            g_k = results[kavg][1][0]["epochs"][-1]["global_averages"]
            summary = f"global reductions: {g_k / max(g_h, 1):.1f}x fewer; " + summary
        return [title, f"- {fmt(hier)}", f"- {fmt(kavg)}", f"- {summary}", ""]

    out += pair("## 1. K2 times fewer global reductions than K-AVG with K=K1, comparable "
                "accuracy", preset["claim1"], True)
    out += pair("## 2. At the same number of global reductions, at least K-AVG's accuracy "
                "(K=K1*K2)", preset["claim2"], False)
    names = [n for n in preset["claim3"] if n in results]
    if names:
        out += ["## 3. Smaller K1 and larger S converge faster (same global period)"]
        for n in names:
            losses = curve(results[n][1], "train_loss")
            mid = len(losses) // 2
            out.append(f"- {fmt(n)}; training loss at epoch {mid + 1}: {losses[mid][0]:.4f}, "
                       f"at the end: {losses[-1][0]:.4f}")
        out.append("")
    return "\n".join(out)


def plot(preset, results, out_dir: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def draw(ax, names, x_key, y_key, xlabel, ylabel, logx=False):
        for name in names:
            if name not in results:
                continue
            config, runs = results[name]
            ys = curve(runs, y_key)
            if x_key == "epoch":
                xs = [e["epoch"] for e in runs[0]["epochs"]]
            else:
                xs = [m for m, _ in curve(runs, x_key)]
            mean = [m for m, _ in ys]
            sd = [s for _, s in ys]
            line, = ax.plot(xs, mean, marker="o", markersize=3, label=config.label)
            ax.fill_between(xs, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                            color=line.get_color(), alpha=0.15)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)

    everything = list(results)
    figures = {
        "accuracy_vs_epochs.png": [("epoch", "test_accuracy", "epoch", "test accuracy", False)],
        "accuracy_vs_global_reductions.png": [("global_averages", "test_accuracy",
                                               "global reductions", "test accuracy", True)],
        "accuracy_vs_time.png": [("seconds", "test_accuracy", "training time (s)", "test accuracy", False)],
        "loss_vs_epochs.png": [("epoch", "train_loss", "epoch", "training loss", False)],
    }
    written = []
    for filename, panels in figures.items():
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for panel in panels:
            draw(ax, everything, *panel)
        fig.tight_layout()
        fig.savefig(out_dir / filename, dpi=110)
        plt.close(fig)
        written.append(filename)
    if "claim1" not in preset:
        return written
    claim_figs = {
        "claim1_fewer_global_reductions.png": (list(preset["claim1"]), "Claim 1: Hier-AVG vs K-AVG with K=K1"),
        "claim2_same_global_reductions.png": (list(preset["claim2"]), "Claim 2: Hier-AVG vs K-AVG with K=K1*K2"),
        "claim3_local_averaging.png": (preset["claim3"], "Claim 3: smaller K1, larger S"),
    }
    for filename, (names, title) in claim_figs.items():
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        if filename.startswith("claim3"):
            draw(axes[0], names, "epoch", "train_loss", "epoch", "training loss")
        else:
            draw(axes[0], names, "global_averages", "test_accuracy", "global reductions",
                 "test accuracy", True)
        draw(axes[1], names, "epoch", "test_accuracy", "epoch", "test accuracy")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out_dir / filename, dpi=110)
        plt.close(fig)
        written.append(filename)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--out-dir", default=None, help="default: <preset>_results")
    p.add_argument("--seeds", type=int, default=None, help="seeds per configuration (preset: 3)")
    p.add_argument("--np", type=int, default=None, help="ranks (preset: 4 for demo, 8 for paper)")
    p.add_argument("--only", default=None, help="comma-separated configuration names to run")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    p.add_argument("--report-only", action="store_true", help="no runs: tabulate and plot what exists")
    p.add_argument("--quiet", action="store_true", help="do not echo the runs' output")
    p.add_argument("--python", type=shlex.split, default=[sys.executable],
                   help="how each rank starts Python: a command line, split as a shell "
                        "would (default: this interpreter)")
    args, extra = p.parse_known_args(argv)
    preset = dict(PRESETS[args.preset])
    preset["configs"] = select(preset["configs"], args.only)
    seeds = args.seeds or preset["seeds"]
    np_ = args.np or preset["np"]
    out_dir = Path(args.out_dir or f"{args.preset}_results")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_sweep(preset, out_dir, seeds, np_, extra, args.timeout, args.python, args.quiet)
    results = load_runs(preset, out_dir, seeds)
    if not results:
        raise SystemExit(f"no results in {out_dir / 'runs'}")
    text = table(results)
    (out_dir / "table.md").write_text(text)
    (out_dir / "claims.md").write_text(claims(preset, results))
    written = plot(preset, results, out_dir)
    print("\n" + text)
    print(f"wrote {out_dir / 'table.md'}, {out_dir / 'claims.md'} and "
          f"{', '.join(str(out_dir / w) for w in written)}")


if __name__ == "__main__":
    main()
