"""The language-model sweep's figures, table and targets, from the runs' JSON. Pure: no
training, no collectives (the sweep and the tests call it).

A run is train_lm.py's JSON. Its methods are named by ``compare.Config`` (``sync``,
``torch_S4_K11_K28``, ``kavg_K8``, ``hier_S4_K11_K28_outer0.7m0.9_int8_ov2`` ...).

Bytes between nodes are the formula of ``hvd_hier.plan.model.global_link_bytes`` applied to
each global reduction a run made: what one node's uplink sends (a ring allreduce over all
ranks for synchronous SGD's gradients and PyTorch's averager; hvd_hier's two stages through
the node for Hier-AVG; an alltoall and allgather of the encoding for compressed deltas). On
the simulated cluster the runs also carry the uplink's measured counters.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from hvd_hier.plan.model import global_link_bytes, is_gathered, ring

#: the quality targets' margins (relative to the baseline's test loss)
OUTER_WITHIN = 0.02
INT8_WITHIN = 0.005
INT2_WITHIN = 0.01  # 2-bit deltas with error feedback
TOPK_WITHIN = 0.02  # top-k 2% with 2-bit values
TOPK_FEWER_THAN_HIER = 50  # bytes across nodes, against uncompressed Hier-AVG
TOPK_FEWER_THAN_SYNC = 400  # and against synchronous SGD over the same tokens
FRAGMENTS_WITHIN = 0.01  # the global level in 4 streaming fragments


def ranks_per_node(run: Dict) -> int:
    """The ranks of one node: the run's --group-size where it is a number, else the ranks per
    host Horovod saw."""
    s = run["args"].get("group_size")
    return s if isinstance(s, int) else run["local_size"]


def link_bytes_per_global(run: Dict, row: Dict) -> float:
    """Bytes one node's uplink sends per global reduction of ``run`` (at eval ``row``)."""
    args, p, l = run["args"], run["size"], ranks_per_node(run)
    size = run["parameter_bytes"]
    if args["algo"] in ("sync", "torch"):
        return ring(p) * size
    encoded, codec = None, args.get("global_compression")
    if codec and row["global_averages"]:
        encoded = row["bytes_global"] / row["global_averages"]
    size /= args.get("global_fragments", 1)  # a fragment's reduction: 1/F of the model
    return global_link_bytes(size, p, l, encoded, two_stage=args["algo"] == "hier",
                             gathered=is_gathered(codec))


def link_bytes(run: Dict, row: Dict) -> float:
    """Bytes one node's uplink sent up to eval ``row`` (the formula)."""
    return row["global_averages"] * link_bytes_per_global(run, row)


def mean_std(values) -> Tuple[float, float]:
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def by_seed(runs: Sequence[Dict], key: str = "test_bpb") -> Dict[int, float]:
    return {r["args"]["seed"]: r[key] for r in runs}


def paired(base: Sequence[Dict], other: Sequence[Dict], relative: bool = True):
    """Other's test loss less base's, seed by seed over the seeds both have (relative: as a
    fraction of base's). Returns (mean, std, per-seed differences)."""
    a, b = by_seed(base), by_seed(other)
    seeds = sorted(set(a) & set(b))
    diffs = [(b[s] - a[s]) / a[s] if relative else b[s] - a[s] for s in seeds]
    if not diffs:
        return None, None, []
    m, sd = mean_std(diffs)
    return m, sd, diffs


@dataclass(frozen=True)
class Target:
    what: str
    met: Optional[bool]  # None: not measured
    figures: str

    def status(self) -> str:
        return "not measured" if self.met is None else "met" if self.met else "missed"


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def quality_targets(results: Dict[str, List[Dict]], names: Dict[str, str]) -> List[Target]:
    """The issue's quality targets on the runs by method name. ``names`` maps the roles
    (sync, kavg, hier, outer8, int8, int2, topk, int8_base) to method names."""
    out = []

    def have(*roles):
        return all(names.get(r) in results for r in roles)

    def g(role):
        return results[names[role]][0]["evals"][-1]["global_averages"]

    what = (f"With an outer optimizer, hvd_hier at 8x fewer global reductions than sync ends "
            f"within {100 * OUTER_WITHIN:g}% of sync's test loss")
    if have("sync", "outer8"):
        m, sd, d = paired(results[names["sync"]], results[names["outer8"]])
        out.append(Target(what, m <= OUTER_WITHIN, (
            f"{names['outer8']}: {_pct(m)} ± {100 * sd:.2f} against sync over {len(d)} seeds "
            f"({g('sync')} against {g('outer8')} global reductions, "
            f"{g('sync') / max(1, g('outer8')):.1f}x fewer)")))
    else:
        out.append(Target(what, None, "no runs of sync or of the outer optimizer at 8x"))

    what = "Hier-AVG beats K-AVG at the same number of global reductions, paired over the seeds"
    if have("kavg", "hier"):
        m, sd, d = paired(results[names["kavg"]], results[names["hier"]], relative=False)
        wins = sum(x < 0 for x in d)
        out.append(Target(what, wins == len(d) and len(d) > 0, (
            f"{names['hier']} minus {names['kavg']}: {m:+.4f} ± {sd:.4f} bits/byte; lower on "
            f"{wins} of {len(d)} seeds ({g('hier')} and {g('kavg')} global reductions)")))
    else:
        out.append(Target(what, None, "no runs of Hier-AVG or K-AVG"))

    for role, limit in (("int8", INT8_WITHIN), ("int2", INT2_WITHIN), ("topk", TOPK_WITHIN),
                        ("frag4", FRAGMENTS_WITHIN)):
        out.append(_codec_target(results, names, role, limit))
    out.extend(_topk_bytes_targets(results, names))
    return out


def _codec_target(results, names, role: str, limit: float) -> Target:
    """The codec (or the fragments) of ``role`` ends within ``limit`` of the same schedule
    uncompressed (whole)."""
    codec = {"topk": "top-k 2% + 2-bit", "frag4": "the global level in 4 fragments"}.get(role,
                                                                                       role)
    twin = "whole-model reductions" if role == "frag4" else "uncompressed"
    what = f"{codec} ends within {100 * limit:g}% of {twin} at the same schedule"
    base = names.get("int8_base")
    if names.get(role) not in results or base not in results:
        return Target(what, None, f"no runs of {codec} or its uncompressed twin")
    m, sd, d = paired(results[base], results[names[role]])
    return Target(what, m <= limit, f"{names[role]}: {_pct(m)} ± {100 * sd:.2f} against {base} "
                                     f"over {len(d)} seeds")


def _size(nbytes: float) -> str:
    """A byte count for a sentence: MB with 1 or 2 decimals, kB below a megabyte."""
    if nbytes >= 1e6:
        return f"{nbytes / 1e6:.{1 if nbytes >= 1e7 else 2}f} MB"
    return f"{nbytes / 1e3:.1f} kB"


def _topk_bytes_targets(results, names) -> List[Target]:
    """Top-k's bytes between nodes over the whole run, against Hier-AVG and against sync."""
    out = []
    for role, want in (("hier", TOPK_FEWER_THAN_HIER), ("sync", TOPK_FEWER_THAN_SYNC)):
        what = f"top-k 2% + 2-bit sends at least {want:g}x fewer bytes across nodes than {role}"
        if names.get("topk") not in results or names.get(role) not in results:
            out.append(Target(what, None, f"no runs of top-k or of {role}"))
            continue
        mine, theirs = (link_bytes(results[names[r]][0], results[names[r]][0]["evals"][-1])
                        for r in ("topk", role))
        ratio = theirs / mine if mine else float("inf")
        out.append(Target(what, ratio >= want, f"{ratio:.0f}x ({_size(theirs)} against "
                                                f"{_size(mine)} over the same tokens)"))
    return out


def ablation_section(results: Dict[str, List[Dict]], names: Dict[str, str]) -> str:
    """What error feedback buys: each codec with and without it, against uncompressed at the
    same schedule, and the paired difference (without less with), over the seeds."""
    lines = ["## Ablation: error feedback", ""]
    base = names.get("int8_base")
    for role, codec in (("int2", "2-bit"), ("topk", "top-k 2% + 2-bit")):
        with_, without = names.get(role), names.get(f"{role}_noef")
        if not all(n in results for n in (base, with_, without)):
            lines.append(f"- {codec}: no runs with and without error feedback.")
            continue
        m1, sd1, _ = paired(results[base], results[with_])
        m0, sd0, _ = paired(results[base], results[without])
        md, sdd, d = paired(results[with_], results[without])
        lines.append(f"- {codec}: with error feedback {_pct(m1)} ± {100 * sd1:.2f}, without "
                     f"{_pct(m0)} ± {100 * sd0:.2f} against uncompressed; without less with "
                     f"{_pct(md)} ± {100 * sdd:.2f}, higher on {sum(x > 0 for x in d)} of "
                     f"{len(d)} seeds.")
    return "\n".join(lines) + "\n"


def targets_section(targets: List[Target]) -> str:
    lines = ["## Targets", ""]
    for t in targets:
        lines.append(f"- **{t.status()}**: {t.what}. {t.figures}.")
    return "\n".join(lines) + "\n"


def table(results: Dict[str, List[Dict]], labels: Dict[str, str]) -> str:
    """Markdown: per method, the final test and validation loss (mean ± std over seeds), the
    global and local reductions, the bytes between nodes and the training time."""
    lines = ["| method | test bits/byte | val bits/byte | global reductions | local reductions "
             "| bytes between nodes | train time (s) | seeds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, runs in results.items():
        last = [r["evals"][-1] for r in runs]
        test, tsd = mean_std(r["test_bpb"] for r in runs)
        val, vsd = mean_std(e["val_bpb"] for e in last)
        secs, ssd = mean_std(r["seconds"] for r in runs)
        link = link_bytes(runs[0], last[0])
        lines.append(
            f"| {labels.get(name, name)} | {test:.4f} ± {tsd:.4f} | {val:.4f} ± {vsd:.4f} | "
            f"{last[0]['global_averages']} | {last[0]['local_averages']} | {link / 1e6:.1f} MB | "
            f"{secs:.0f} ± {ssd:.0f} | {len(runs)} |")
    return "\n".join(lines) + "\n"


def curve(runs: Sequence[Dict], y: str = "val_bpb", x: str = "steps"):
    """(x, mean y, std y) per evaluation, over the runs (cut to the shortest)."""
    n = min(len(r["evals"]) for r in runs)
    out = []
    for i in range(n):
        rows = [r["evals"][i] for r in runs]
        xs = [link_bytes(r, row) if x == "link_bytes" else row[x] for r, row in zip(runs, rows)]
        m, sd = mean_std(row[y] for row in rows)
        out.append((statistics.fmean(xs), m, sd))
    return out


# --- wall-clock to a target loss (the simulated cluster) ----------------------------------

#: at each rate: how many times sooner than sync and than PyTorch's averager the best hvd_hier
#: setting reaches the target
SOONER = {"100mbit": (5.0, 1.5), "1gbit": (2.0, 1.2)}
#: identical work (Hier-AVG, no compression or overlap, against PyTorch's averager at the same
#: schedule): its step no slower, at this rate
IDENTICAL_WORK_RATE = "1gbit"


def time_to_target(run: Dict, target: float) -> Optional[float]:
    """Training seconds at the first evaluation at or below ``target`` (None: not reached)."""
    return next((row["seconds"] for row in run["evals"] if row["val_bpb"] <= target), None)


def steps_to_target(run: Dict, target: float) -> Optional[int]:
    return next((row["steps"] for row in run["evals"] if row["val_bpb"] <= target), None)


def step_seconds(run: Dict) -> float:
    """Training seconds per step over the whole run."""
    return run["seconds"] / max(1, run["steps"])


def paired_ratios(slow: Sequence[Dict], fast: Sequence[Dict], figure) -> List[float]:
    """figure(slow run) / figure(fast run), round by round (each run's ``round``), over the
    rounds where both have a figure."""
    a = {r["round"]: figure(r) for r in slow}
    b = {r["round"]: figure(r) for r in fast}
    return [a[k] / b[k] for k in sorted(set(a) & set(b)) if a[k] is not None and b[k]]


def _median_range(values: Sequence[float]) -> str:
    return (f"{statistics.median(values):.2f}x" + (
        f" (median of {len(values)} rounds, {min(values):.2f}-{max(values):.2f})"
        if len(values) > 1 else ""))


def time_targets(by_rate: Dict[str, Dict[str, List[Dict]]], roles: Dict[str, str],
                 target: float, candidates: Sequence[str]) -> List[Target]:
    """The time targets on the cluster's runs (``by_rate[rate][method]``: the rounds' runs).
    ``candidates``: the hvd_hier methods the best setting is chosen from (the one of least
    median time to target)."""
    out = []
    for rate, (over_sync, over_torch) in SOONER.items():
        what = (f"at {rate}, the best hvd_hier setting reaches the target at least "
                f"{over_sync:g}x sooner than sync and {over_torch:g}x sooner than PyTorch's "
                "averager")
        runs = by_rate.get(rate, {})
        sync, torch_runs = runs.get(roles["sync"]), runs.get(roles["torch"])
        times = {m: [time_to_target(r, target) for r in runs[m]] for m in candidates if m in runs}
        reached = {m: statistics.median(t) for m, t in times.items()
                   if t and all(x is not None for x in t)}
        if not sync or not torch_runs or not reached:
            out.append(Target(what, None, "a run is missing, or no hvd_hier setting reached "
                                          "the target in every round"))
            continue
        best = min(reached, key=reached.get)
        figure = lambda r: time_to_target(r, target)  # noqa: E731
        s = paired_ratios(sync, runs[best], figure)
        t = paired_ratios(torch_runs, runs[best], figure)
        if not s or not t:
            out.append(Target(what, False, f"{best}: {reached[best]:.1f} s; sync or PyTorch's "
                                           "averager did not reach the target"))
            continue
        met = statistics.median(s) >= over_sync and statistics.median(t) >= over_torch
        out.append(Target(what, met, (
            f"{best}: {reached[best]:.1f} s, {_median_range(s)} sooner than sync "
            f"({statistics.median([figure(r) for r in sync]):.1f} s) and {_median_range(t)} "
            f"sooner than PyTorch's averager "
            f"({statistics.median([figure(r) for r in torch_runs]):.1f} s)")))
    rate = IDENTICAL_WORK_RATE
    what = (f"identical work at {rate}: Hier-AVG's step no slower than PyTorch's averager's "
            "at the same schedule")
    runs = by_rate.get(rate, {})
    ours, theirs = runs.get(roles["hier"]), runs.get(roles["torch"])
    if not ours or not theirs:
        out.append(Target(what, None, "a run is missing"))
    else:
        r = paired_ratios(theirs, ours, step_seconds)
        mine = statistics.median(step_seconds(x) for x in ours)
        other = statistics.median(step_seconds(x) for x in theirs)
        out.append(Target(what, statistics.median(r) >= 1.0, (
            f"{1e3 * mine:.0f} against {1e3 * other:.0f} ms per step: {_median_range(r)}")))
    return out
