"""The network benchmark's targets, checked on the runs of one ``bench_network.py`` run: each
met, missed or not measured, with the figures that decide it.

1. Identical work: hvd_hier's Hier-AVG (no compression, no overlap) at least as fast per step
   as PyTorch's averager at the same K1, K2, at every rate up to 1 Gbit/s.
2. The best hvd_hier setting at the slowest rate, K1=1 (the first such schedule): at least 2x
   faster per step than PyTorch's averager and 10x faster than synchronous Horovod (its
   accuracy is the MNIST-5k sweep's, in docs/RESULTS.md; not measured here).
3. Overlap efficiency: an overlapped run's step at most 1.2x the larger of (its computation
   plus its local averagings per step) and (its global reduction divided by K1*K2); the
   computation is the run's own (``costmodel.run_compute``), one local averaging and one
   global reduction are those of the run of the same setting without overlap. And the cost
   model within 15% of every run at the slowest rate.
4. The planner (``python -m hvd_hier.plan`` on the cluster, given the compute-only run's
   median step as a user gives theirs) within 15% of every hvd_hier run at the slowest rate.

With repeated runs (``--repeats``), each method's run is the one of median step time and the
ratios of targets 1 and 2 are medians of the ratios repeat by repeat, shown with their range.

Pure: it reads the runs' figures (``summary`` included) and the cost model's predictions.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from costmodel import averaging_seconds, run_compute

#: the margins of the targets
AS_FAST = 1.0
BEST_OVER_TORCH, BEST_OVER_SYNC = 2.0, 10.0
OVERLAP_SLACK = 1.2
MODEL_WITHIN = 0.15


@dataclass(frozen=True)
class Target:
    number: int
    what: str
    met: Optional[bool]  # None: not measured in this run
    figures: str

    def status(self) -> str:
        return "not measured" if self.met is None else "met" if self.met else "missed"


def _mean_ms(run: Dict) -> float:
    return 1e3 * run["summary"]["mean_step"]


def paired_ratio(slow: Dict, fast: Dict) -> Tuple[float, float, float, int]:
    """``slow``'s mean step over ``fast``'s, repeat by repeat over the rounds both ran (a
    combined run lists its repeats' mean steps in ``repeat_steps``, in round order): the
    median ratio, its range and the number of pairs."""
    a = slow.get("repeat_steps") or [slow["summary"]["mean_step"]]
    b = fast.get("repeat_steps") or [fast["summary"]["mean_step"]]
    ratios = [x / y for x, y in zip(a, b)]
    return statistics.median(ratios), min(ratios), max(ratios), len(ratios)


def ratio_text(slow: Dict, fast: Dict, digits: int = 2) -> str:
    """``1.13x``, or with repeats ``1.13x, median of 3 repeats, 1.02-1.20``."""
    median, low, high, n = paired_ratio(slow, fast)
    return (f"{median:.{digits}f}x"
            + (f", median of {n} repeats, {low:.{digits}f}-{high:.{digits}f}" if n > 1 else ""))


def _setting(run: Dict) -> str:
    words = [f"K1={run['k1']} K2={run['k2']}"]
    if run.get("compression"):
        words.append(run["compression"])
    if run.get("overlap_steps"):
        words.append(f"overlap {run['overlap_steps']}")
    return " + ".join(words)


def check(results: List[Dict], predict: Callable[[Dict], Optional[float]],
          planned: Callable[[Dict], Optional[float]]) -> List[Target]:
    """Every target on ``results`` (the runs of all rates, each training run with its
    ``summary``); ``predict(run)``: the cost model's seconds per step for a run, or None;
    ``planned(run)``: the planner's as it printed it, or None."""
    runs = [r for r in results if "summary" in r]
    rates = sorted({r["rate"] for r in runs}, key=lambda rate: next(
        r["rate_bits"] for r in runs if r["rate"] == rate))
    if not rates:
        return []
    slowest = rates[0]
    by = {(r["rate"], r["name"]): r for r in runs}
    schedules = sorted({(r["k1"], r["k2"]) for r in runs if r["method"] == "hier"},
                       key=lambda s: (s[0] != 1, s))
    out: List[Target] = []

    # 1. identical work
    for rate in rates:
        bits = next(r["rate_bits"] for r in runs if r["rate"] == rate)
        if bits > 10**9:
            continue
        for k1, k2 in schedules:
            ours, theirs = by.get((rate, f"hier_{k1}x{k2}")), by.get((rate, f"torch_{k1}x{k2}"))
            what = f"identical work at {rate}, K1={k1} K2={k2}: hvd_hier <= PyTorch's averager"
            if ours is None or theirs is None:
                out.append(Target(1, what, None, "a run is missing"))
                continue
            a, b = _mean_ms(ours), _mean_ms(theirs)
            out.append(Target(1, what, paired_ratio(theirs, ours)[0] >= AS_FAST,
                              f"{a:.0f} against {b:.0f} ms ({ratio_text(theirs, ours)})"))

    # 2. the best setting at the slowest rate
    if schedules:
        k1, k2 = schedules[0]
        what = (f"best hvd_hier setting at {slowest}, K1={k1} K2={k2}: >= {BEST_OVER_TORCH:g}x "
                f"PyTorch's averager and >= {BEST_OVER_SYNC:g}x synchronous Horovod")
        mine = [r for r in runs if r["rate"] == slowest and r["method"] == "hier"
                and (r["k1"], r["k2"]) == (k1, k2)]
        torch_run, sync = by.get((slowest, f"torch_{k1}x{k2}")), by.get((slowest, "sync"))
        if not mine or torch_run is None or sync is None:
            out.append(Target(2, what, None, "a run is missing"))
        else:
            best = min(mine, key=_mean_ms)
            t, a, s = _mean_ms(best), _mean_ms(torch_run), _mean_ms(sync)
            over_torch, over_sync = paired_ratio(torch_run, best)[0], paired_ratio(sync, best)[0]
            out.append(Target(2, what,
                              over_torch >= BEST_OVER_TORCH and over_sync >= BEST_OVER_SYNC,
                              f"{_setting(best)}: {t:.0f} ms against {a:.0f} ms "
                              f"({ratio_text(torch_run, best)}) and {s:.0f} ms "
                              f"({ratio_text(sync, best, digits=1)})"))

    # 3. overlap efficiency, against the same setting without overlap
    compute = {r["rate"]: r for r in runs if r["method"] == "compute"}
    for r in runs:
        if r["method"] != "hier" or not r.get("overlap_steps"):
            continue
        twin = by.get((r["rate"], r["name"].rsplit("_ov", 1)[0]))
        what = f"overlap efficiency at {r['rate']}, {_setting(r)}: <= {OVERLAP_SLACK:g}x the bound"
        if twin is None or r["rate"] not in compute or not twin["global_averages"]:
            out.append(Target(3, what, None, "the run without overlap or compute is missing"))
            continue
        t_c = run_compute(r) or statistics.median(compute[r["rate"]]["step_seconds"])
        t_local = (averaging_seconds(twin, "local") / twin["local_averages"]
                   if twin["local_averages"] else 0.0)
        per_step_local = t_local * r["local_averages"] / r["steps"]
        t_global = averaging_seconds(twin, "global") / twin["global_averages"]
        bound = max(t_c + per_step_local, t_global / (r["k1"] * r["k2"]))
        t = r["summary"]["mean_step"]
        out.append(Target(3, what, t <= OVERLAP_SLACK * bound,
                          f"{1e3 * t:.0f} ms against a bound of {1e3 * bound:.0f} ms "
                          f"({t / bound:.2f}x; compute {1e3 * t_c:.0f} + local "
                          f"{1e3 * per_step_local:.0f} ms per step, global "
                          f"{1e3 * t_global:.0f} ms / {r['k1'] * r['k2']})"))

    # 3. the cost model at the slowest rate
    off = []
    for r in runs:
        if r["rate"] != slowest or r["method"] == "compute":
            continue
        model = predict(r)
        if model:
            off.append((r["summary"]["mean_step"] / model, r["name"]))
    what = f"cost model within {100 * MODEL_WITHIN:.0f}% of every run at {slowest}"
    out.append(_within(3, what, off))

    # 4. the planner at the slowest rate
    what = f"planner within {100 * MODEL_WITHIN:.0f}% of every hvd_hier run at {slowest}"
    off = [(r["summary"]["mean_step"] / step, r["name"]) for r in runs
           if r["rate"] == slowest and r["method"] == "hier"
           for step in [planned(r)] if step]
    out.append(_within(4, what, off) if off else Target(4, what, None, "no planner run"))
    return out


def _within(number: int, what: str, off) -> Target:
    """measured / predicted for each run: met when every ratio is within MODEL_WITHIN."""
    if not off:
        return Target(number, what, None, "no prediction")
    worst = max(off, key=lambda o: abs(o[0] - 1))
    bad = [f"{name} {ratio:.2f}" for ratio, name in off if abs(ratio - 1) > MODEL_WITHIN]
    return Target(number, what, not bad,
                  f"measured / predicted {min(o[0] for o in off):.2f}-{max(o[0] for o in off):.2f}"
                  f" over {len(off)} runs (worst {worst[1]} {worst[0]:.2f})"
                  + (f"; outside: {', '.join(bad)}" if bad else ""))


def markdown(targets: List[Target]) -> str:
    if not targets:
        return ""
    lines = ["## The targets", "", "| # | target | status | figures |", "|---|---|---|---|"]
    for t in targets:
        status = t.status()
        lines.append(f"| {t.number} | {t.what} | {'**' + status + '**' if t.met else status} | "
                     f"{t.figures} |")
    return "\n".join(lines + [""])
