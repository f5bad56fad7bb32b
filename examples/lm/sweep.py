"""The language-model comparison: every method on the same tokens, through train_lm.py.

    python examples/lm/sweep.py --preset tune --out-dir docs/results/lm_tune     # validation
    python examples/lm/sweep.py --preset quality --out-dir docs/results/lm       # 3 seeds
    python examples/lm/sweep.py --preset smoke --out-dir /tmp/lm_smoke           # make test
    sudo .venv/bin/python examples/lm/sweep.py --preset cluster --tuned docs/results/lm_tune/chosen.json \
        --out-dir docs/results/lm_cluster                                       # wall-clock

8 ranks as two "nodes" of 4 (``horovodrun -H localhost:4,127.0.0.1:4``; PyTorch's averager
under ``torchrun`` with groups of 4), the GPT ``1m`` of gpt.py on the standard-library corpus,
every learner reading windows of the whole training split (IID; the smoke run reads shards of
its own packages, ``--non-iid learner``). A seed fixes the data order and the initial model
for every method.

* ``tune`` chooses the hyper-parameters on the validation split, one seed: the inner AdamW
  learning rate on synchronous SGD (a grid of factors of 2, widened while its best value is
  at an edge), then the outer Nesterov SGD's learning rate and momentum
  on Hier-AVG K1=1 K2=8 at that learning rate. It writes ``chosen.json``.
* ``quality`` runs the methods at those settings (``--tuned``: the tune folder's
  ``chosen.json``), three seeds, and reports the test loss in bits per byte: sync, PyTorch's
  averager, K-AVG and Hier-AVG at 8x fewer global reductions, Hier-AVG with the outer
  optimizer at 4x and 8x fewer, with int8 deltas, with int8 and overlap; with ``--plan``
  (the JSON of ``python -m hvd_hier.plan --json`` on the cluster) also its recommendation,
  with the tuned outer optimizer.
* ``cluster`` (root) trains the same GPT on the simulated two-node cluster (2 x 2 ranks) at
  100 Mbit/s and 1 Gbit/s, 3 rounds per rate alternated, each run to the target loss
  (cluster.py), and reports the time to target with its targets.
  ``--roles`` (or ``--only``) runs other methods there instead, for example the fewer-bits
  codecs and fragments beside their baselines (``make lm-cluster-bits``: 2 rounds per rate,
  the target copied from docs/results/lm_cluster, the same training).
* ``smoke`` and ``cluster-smoke`` drive the same pipelines for a few steps of a tiny model.

Finished runs (``runs/<method>_seed<k>.json``) are reused; each launch shows a progress bar.
Then it writes ``table.md`` (the table and the targets, met or missed with their figures) and
the plots ``val_vs_steps.png`` and ``val_vs_link_bytes.png`` into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import report  # noqa: E402
from compare import Config, run_configs, select  # noqa: E402

# The tuned settings where no tune folder says otherwise (the tune preset's starting point).
DEFAULT_LR = 2e-3
DEFAULT_OUTER = (0.7, 0.9)  # DiLoCo's outer Nesterov SGD
INNER_GRID = (2e-3, 4e-3, 8e-3)  # widened while the best is at an edge, up to MAX_GRID
MAX_GRID = 6
OUTER_GRID = ((0.7, 0.9), (1.0, 0.5), (0.7, 0.5))


def quality_configs(s: int, k: int, outer, overlap: int, plan: Optional[Config] = None):
    """The comparison's methods, groups of s, a global reduction every k steps (K1=1, K2=k):
    8x fewer than sync for k=8. Returns the configs and the targets' roles."""
    cfg = {
        "sync": Config("sync"),
        "torch": Config("torch", 1, k, s),
        "kavg": Config("kavg", 1, k),
        "hier": Config("hier", 1, k, s),
        "outer4": Config("hier", 1, k // 2, s, outer),
        "outer8": Config("hier", 1, k, s, outer),
        "int8": Config("hier", 1, k, s, outer, "int8"),
        "int8_overlap": Config("hier", 1, k, s, outer, "int8", overlap),
        "int4": Config("hier", 1, k, s, outer, "int4"),
        "int2": Config("hier", 1, k, s, outer, "int2"),
        "topk": Config("hier", 1, k, s, outer, "topk0.02_int2"),
        # the ablation: the same codecs without error feedback
        "int2_noef": Config("hier", 1, k, s, outer, "int2", feedback=False),
        "topk_noef": Config("hier", 1, k, s, outer, "topk0.02_int2", feedback=False),
        "frag4": Config("hier", 1, k, s, outer, fragments=4),
    }
    configs = list(cfg.values())
    if plan is not None and plan not in configs:
        configs.append(plan)
    roles = {role: c.name for role, c in cfg.items()}
    roles["int8_base"] = roles["outer8"]
    return configs, roles


PRESETS = {
    "quality": {"np": 8, "node": 4, "k": 8, "seeds": 3, "overlap": 2,
                "train": ["--size", "1m", "--steps", "256", "--batch-size", "4",
                          "--eval-every", "32", "--non-iid", "none"]},
    "tune": {"np": 8, "node": 4, "k": 8, "seeds": 1, "overlap": 2,
             "train": ["--size", "1m", "--steps", "256", "--batch-size", "4",
                       "--eval-every", "32", "--non-iid", "none"]},
    # wall-clock on the simulated cluster (2 nodes x 2 ranks; cluster.py): one rank-step of
    # 128 tokens, so that sync's communication at 1 Gbit/s is 1-4x its computation (docs/LM.md)
    "cluster": {"np": 4, "node": 2, "k": 8, "seeds": 1, "overlap": 2, "repeats": 3,
                "rates": ["100mbit", "1gbit"], "lr": 2e-3,
                "train": ["--size", "1m", "--steps", "512", "--batch-size", "1",
                          "--eval-every", "16", "--eval-windows", "128", "--test-windows", "128",
                          "--non-iid", "none"]},
    "cluster-smoke": {"np": 4, "node": 2, "k": 4, "seeds": 1, "overlap": 1, "repeats": 2,
                      "rates": ["1gbit"], "run_timeout": 120,
                      "train": ["--size", "tiny", "--steps", "8", "--batch-size", "2",
                                "--eval-every", "2", "--eval-windows", "8",
                                "--test-windows", "8", "--lr-warmup", "2"]},
    "smoke": {"np": 4, "node": 2, "k": 4, "seeds": 1, "overlap": 1,
              "train": ["--size", "tiny", "--steps", "8", "--batch-size", "2",
                        "--eval-every", "4", "--eval-windows", "8", "--test-windows", "8",
                        "--non-iid", "learner", "--lr-warmup", "2"]},
}


# The order the quality sweep runs its methods in: the targets' first, so that a sweep cut
# short has the most to say (the table keeps the reading order of quality_configs).
RUN_FIRST = ("sync", "outer8", "hier", "kavg", "int8", "torch", "outer4", "int8_overlap", "int2",
             "topk", "int4", "int2_noef", "topk_noef", "frag4")


def run_order(configs, roles):
    rank = {roles[r]: i for i, r in enumerate(RUN_FIRST)}
    return sorted(configs, key=lambda c: rank.get(c.name, len(rank)))


def plan_config(path: Optional[str], s: int, outer) -> Optional[Config]:
    """The setting ``python -m hvd_hier.plan --json`` recommended (K1, K2, compression,
    overlap), as a Hier-AVG config with the tuned outer optimizer (which costs no bytes)."""
    if not path:
        return None
    best = json.loads(Path(path).read_text())["recommended"]
    return Config("hier", best["k1"], best["k2"], s, outer, best.get("compression"),
                  best.get("overlap", 0))


class Progress:
    """A progress bar per launch, moved by rank 0's evaluation lines (``step N ...``)."""

    STEP = re.compile(r"(?:^|:)step\s+(\d+)\s+train")

    def __init__(self, steps: int):
        self.steps, self.bar, self.done, self.last = steps, None, 0, 0

    def start(self, label: str, seeds: int):
        from tqdm import tqdm
        self.close()
        self.bar = tqdm(total=self.steps * seeds, desc=label, unit="step", file=sys.stderr)
        self.done, self.last = 0, 0

    def line(self, text: str):
        m = self.STEP.search(text)
        if not m or self.bar is None:
            return
        step = int(m.group(1))
        if step < self.last:  # the next seed's run
            self.done += self.steps
        self.last = step
        self.bar.n = self.done + step
        self.bar.set_postfix_str(text.split("val", 1)[-1].split("bits")[0].strip()
                                 if "val" in text else "")
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def launcher(config: Config, np_: int, node: int, python: List[str]) -> List[str]:
    """The launch of one run's ranks, up to the script: ``python`` is how each rank starts
    Python (``--python``); the launchers come from this interpreter's environment."""
    if config.algo == "torch":
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", str(np_)]
        return torchrun if python == [sys.executable] else [*torchrun, "--no-python", *python]
    horovodrun = str(Path(sys.executable).parent / "horovodrun")
    return [horovodrun, "-np", str(np_), "-H", f"localhost:{node},127.0.0.1:{np_ - node}",
            "--gloo", *python]


def run(configs, preset, out_dir: Path, seeds: int, common: List[str], timeout: float,
        quiet: bool, python: List[str]):
    steps = int(preset["train"][preset["train"].index("--steps") + 1])
    progress = Progress(steps)

    def command(config, missing, pattern):
        progress.start(config.name, len(missing))
        return [*launcher(config, preset["np"], preset["node"], python),
                str(HERE / "train_lm.py"), *preset["train"], *common, *config.train_args(),
                "--seed", ",".join(map(str, missing)), "--no-progress", "--out", pattern]

    try:
        run_configs(configs, out_dir / "runs", seeds, command, timeout, quiet=quiet,
                    on_line=progress.line)
    finally:
        progress.close()


def load(configs, out_dir: Path, seeds: int) -> Dict[str, List[Dict]]:
    results = {}
    for c in configs:
        runs = [json.loads(p.read_text()) for s in range(seeds)
                for p in [out_dir / "runs" / f"{c.name}_seed{s}.json"] if p.exists()]
        if runs:
            results[c.name] = runs
    return results


def tune(preset, out_dir: Path, args) -> Dict:
    """The inner learning rate on sync, then the outer optimizer at it, on the validation
    split (the last evaluation's val_bpb, one seed)."""
    s, k = preset["node"], preset["k"]
    grid = list(INNER_GRID)
    while True:  # widen the grid by factors of 2 while its best value is at an edge
        inner = [Config("sync", lr=lr) for lr in grid]
        run(inner, preset, out_dir, 1, [], args.timeout, args.quiet, args.python)
        val = {c.lr: load([c], out_dir, 1)[c.name][0]["evals"][-1]["val_bpb"] for c in inner}
        lr = min(val, key=val.get)
        if lr == grid[-1] and len(grid) < MAX_GRID:
            grid.append(2 * lr)
        elif lr == grid[0] and len(grid) < MAX_GRID:
            grid.insert(0, lr / 2)
        else:
            break
    outer = [Config("hier", 1, k, s, o, lr=lr) for o in OUTER_GRID]
    run(outer, preset, out_dir, 1, [], args.timeout, args.quiet, args.python)
    oval = {c.outer: load([c], out_dir, 1)[c.name][0]["evals"][-1]["val_bpb"] for c in outer}
    best = min(oval, key=oval.get)
    chosen = {"lr": lr, "outer_lr": best[0], "outer_momentum": best[1],
              "val_bpb_by_lr": {f"{k:g}": v for k, v in val.items()},
              "val_bpb_by_outer": {f"lr={o[0]:g} m={o[1]:g}": v for o, v in oval.items()}}
    (out_dir / "chosen.json").write_text(json.dumps(chosen, indent=1))
    lines = ["# Tuning on the validation split (one seed)", "",
             "| inner learning rate (sync) | val bits/byte |", "|---:|---:|"]
    lines += [f"| {k:g}{' (chosen)' if k == lr else ''} | {v:.4f} |" for k, v in sorted(val.items())]
    lines += ["", f"| outer optimizer (Hier-AVG K1=1 K2={k}, lr {lr:g}) | val bits/byte |",
              "|---|---:|"]
    lines += [f"| lr={o[0]:g} m={o[1]:g}{' (chosen)' if o == best else ''} | {v:.4f} |"
              for o, v in oval.items()]
    text = "\n".join(lines) + "\n"
    (out_dir / "table.md").write_text(text)
    print("\n" + text)
    return chosen


def plot(results, labels, out_dir: Path) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for x, xlabel, name, logx in (("steps", "steps (4,096 tokens each)", "val_vs_steps.png", False),
                                  ("link_bytes", "bytes sent between nodes (per node)",
                                   "val_vs_link_bytes.png", True)):
        fig, ax = plt.subplots(figsize=(7, 4.4))
        for method, runs in results.items():
            pts = report.curve(runs, "val_bpb", x)
            if logx:
                pts = [p for p in pts if p[0] > 0]
            xs, ms, sds = zip(*pts) if pts else ((), (), ())
            line, = ax.plot(xs, ms, marker="o", markersize=2.5, label=labels.get(method, method))
            ax.fill_between(xs, [m - s for m, s in zip(ms, sds)],
                            [m + s for m, s in zip(ms, sds)], color=line.get_color(), alpha=0.15)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss (bits per byte)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


# The cluster's methods by default: those of the time targets (the ones of K-AVG and of the
# outer optimizer at 4x are quality questions, answered on one host). ``--only`` runs any
# others there (the fewer-bits codecs and fragments: docs/LM.md).
CLUSTER_ROLES = ("sync", "torch", "hier", "outer8", "int8", "int8_overlap")


def cluster_methods(configs, roles, only: Optional[str]):
    """The configs the cluster sweep runs (``only`` given: those it named, already selected;
    otherwise the CLUSTER_ROLES' and the planner's), and the hvd_hier ones among them that the
    time targets choose the best setting from."""
    if not only:
        keep = {roles[r] for r in CLUSTER_ROLES}
        configs = [c for c in configs if c.name in keep or c.name not in roles.values()]
    if not any(c.algo == "sync" for c in configs):
        raise SystemExit(f"the cluster presets need sync among the methods (its run gives the "
                         f"target and every 'vs sync' ratio): add it to --roles or --only, got "
                         f"{[c.name for c in configs]}")
    return configs, [c.name for c in configs if c.algo == "hier"]


def wall_clock(args, preset, out_dir: Path, configs, roles, common, lr, outer):
    """The cluster sweep (cluster.py): every round at every rate, then the table, the time
    targets and the loss against wall-clock time."""
    import cluster

    configs, candidates = cluster_methods(configs, roles, args.only)
    progress = Progress(int(preset["train"][preset["train"].index("--steps") + 1]))
    sync = next(c for c in configs if c.algo == "sync")  # (cluster_methods checked it is there)
    if args.report_only:
        target = json.loads((out_dir / "target.json").read_text())["target_bpb"]
    else:
        target = cluster.run(preset, out_dir, sync, configs, common, args.timeout, args.prefix,
                             progress, args.python)
    by_rate = cluster.load(out_dir, preset, configs)
    if not by_rate:
        raise SystemExit(f"no results in {out_dir / 'runs'}")
    labels = {c.name: c.label for c in configs}
    what = json.loads((out_dir / "target.json").read_text())["what"]
    text = (f"# {args.preset}: wall-clock to a target loss on the simulated cluster\n\n"
            f"Target: {target:.4f} bits per byte, {what}. Inner lr {lr:g}, outer lr "
            f"{outer[0]:g} momentum {outer[1]:g}; {preset['repeats']} rounds per rate, "
            "alternated; times are medians over the rounds (with their range).\n\n"
            + cluster.table(by_rate, labels, target) + "\n"
            + report.targets_section(report.time_targets(by_rate, roles, target, candidates)))
    (out_dir / "table.md").write_text(text)
    cluster.plot(by_rate, labels, target, out_dir / "loss_vs_time.png")
    print("\n" + text)
    print(f"wrote {out_dir / 'table.md'} and {out_dir / 'loss_vs_time.png'}")
    return by_rate


def wanted(only: Optional[str], by_role: Optional[str], roles: Dict[str, str]) -> Optional[str]:
    """``--only`` with the methods ``--roles`` names added (None: every method)."""
    if not by_role:
        return only
    unknown = sorted(set(by_role.split(",")) - set(roles))
    if unknown:
        raise SystemExit(f"--roles: unknown roles {unknown}; the roles are {sorted(roles)}")
    names = [roles[r] for r in by_role.split(",")]
    return ",".join(([only] if only else []) + names)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="quality")
    p.add_argument("--out-dir", default=None, help="default: lm_<preset>")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (preset: 3)")
    p.add_argument("--tuned", default=None,
                   help="the tune preset's chosen.json (default: the built-in settings)")
    p.add_argument("--plan", default=None,
                   help="python -m hvd_hier.plan --json output: add its recommendation")
    p.add_argument("--only", default=None, help="comma-separated method names to run")
    p.add_argument("--roles", default=None,
                   help="comma-separated methods by role (sync, torch, kavg, hier, outer4, "
                        "outer8, int8, int8_overlap, int4, int2, topk, int2_noef, topk_noef, "
                        "frag4), besides --only")
    p.add_argument("--repeats", type=int, default=None,
                   help="cluster presets: rounds per rate (preset: 3)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per launch")
    p.add_argument("--report-only", action="store_true", help="no runs: report what exists")
    p.add_argument("--quiet", action="store_true", help="do not echo the runs' output")
    p.add_argument("--prefix", default="hvdlm",
                   help="cluster presets: the namespaces' names, <prefix>-n<i>")
    p.add_argument("--python", type=shlex.split, default=[sys.executable],
                   help="how each rank starts Python: a command line, split as a shell "
                        "would (default: this interpreter)")
    args = p.parse_args(argv)
    preset = dict(PRESETS[args.preset])
    if args.repeats is not None:
        if args.repeats < 1:
            raise SystemExit(f"--repeats must be at least 1, got {args.repeats}")
        preset["repeats"] = args.repeats
    out_dir = Path(args.out_dir or f"lm_{args.preset}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.preset == "tune":
        return tune(preset, out_dir, args)
    tuned = json.loads(Path(args.tuned).read_text()) if args.tuned else {}
    lr = tuned.get("lr", DEFAULT_LR)
    outer = (tuned.get("outer_lr", DEFAULT_OUTER[0]), tuned.get("outer_momentum", DEFAULT_OUTER[1]))
    configs, roles = quality_configs(preset["node"], preset["k"], outer, preset["overlap"],
                                     plan_config(args.plan, preset["node"], outer))
    args.only = wanted(args.only, args.roles, roles)
    configs = select(configs, args.only, "methods")
    seeds = args.seeds or preset["seeds"]
    lr = preset.get("lr", lr)
    common = ["--lr", f"{lr:g}"]
    if "rates" in preset:
        return wall_clock(args, preset, out_dir, configs, roles, common, lr, outer)
    if not args.report_only:
        run(run_order(configs, roles), preset, out_dir, seeds, common, args.timeout, args.quiet, args.python)
    results = load(configs, out_dir, seeds)
    if not results:
        raise SystemExit(f"no results in {out_dir / 'runs'}")
    labels = {c.name: c.label for c in configs}
    text = (f"# {args.preset}: inner lr {lr:g}, outer lr {outer[0]:g} momentum {outer[1]:g}"
            f"{' (tuned: ' + args.tuned + ')' if args.tuned else ' (not tuned)'}\n\n"
            + report.table(results, labels) + "\n"
            + report.targets_section(report.quality_targets(results, roles)) + "\n"
            + report.ablation_section(results, roles))
    (out_dir / "table.md").write_text(text)
    written = plot(results, labels, out_dir)
    print("\n" + text)
    print(f"wrote {out_dir / 'table.md'} and {', '.join(str(out_dir / w) for w in written)}")
    return results


if __name__ == "__main__":
    main()
