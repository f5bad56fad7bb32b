"""Overlapped reductions (``overlap_steps``) on 8 ranks (two host names), at every step
against the independent simulation of all learners (tests/reference.py), which adds each
correction r − s at the end of step t + D: K1 = 1 with D = 2, K-AVG (S = 1) with D = 1 in the
two-level form, an outer optimizer, three levels with two of them overlapped, flat storage,
compression with an outer optimizer; the per-level counters; resumes from checkpoints taken
between t and t + D (every rank loading, and rank 0 alone); the non-finite policy with a
reduction in flight ("raise" leaves every rank's parameters intact, "skip" gives the
offending rank r and the others their correction).

Values are dyadic and every group has 1, 2, 4 or 8 ranks, so the comparisons are exact.
"""

import copy
import functools
import warnings

import numpy as np
import torch

import horovod.torch as hvd
import hvd_hier
from hvd_hier import Level
from common import expect_error, init, main, report
from levels import LR, everyone, grad_values, init_values, random_model, random_steps, resume_and_compare, step
from reference import simulate_levels_sgd


def sgd(**kw):
    return functools.partial(torch.optim.SGD, **kw)


NESTEROV = dict(lr=0.5, momentum=0.5, nesterov=True)
CONFIGS = {
    # name: (levels as (period, group_size, options), warmup, steps)
    "k1_d2": ([(1, 4, {}), (4, "all", dict(overlap_steps=2))], 1, 14),
    "outer_d2": ([(1, 2, {}), (4, "all", dict(overlap_steps=2, outer=NESTEROV))], 2, 15),
    "three_levels": ([(1, 2, {}), (2, 4, dict(overlap_steps=1)),
                      (8, "all", dict(overlap_steps=3))], 0, 19),
    "outer_int8_d1": ([(1, 2, {}), (2, 4, {}),
                       (4, "all", dict(overlap_steps=1, outer=dict(lr=0.5, momentum=0.5),
                                       compression="int8"))], 1, 13),
    "outer_int2_d2": ([(1, 2, {}), (2, 4, {}),
                       (4, "all", dict(overlap_steps=2, outer=dict(lr=0.5, momentum=0.5),
                                       compression="int2"))], 1, 14),
}


def levels_of(spec):
    out = []
    for period, size, options in spec:
        options = dict(options)
        if "outer" in options:
            options["outer"] = sgd(**options["outer"])
        out.append(Level(period, size, **options))
    return out


def simulation_args(spec):
    outers = [o.get("outer") for _, _, o in spec]
    codecs = [o.get("compression") for _, _, o in spec]
    overlaps = [o.get("overlap_steps", 0) for _, _, o in spec]
    return outers, codecs, overlaps


def expected_counts(schedule, spec, t):
    """Averagings per level through step t: the level that is due, and for an overlapped
    one also the level below, which averages first."""
    counts = [0] * len(spec)
    for u in range(1, t + 1):
        level = schedule.level_at(u)
        if level is None or level == "sync":
            continue
        counts[level] += 1
        if spec[level][2].get("overlap_steps") and level > 0:
            counts[level - 1] += 1
    return counts


def check_config(name, rank, size, flat_storage=False, shorthand=False):
    spec, warmup, steps = CONFIGS[name]
    w = torch.nn.Parameter(torch.tensor(init_values(0), dtype=torch.float64))
    kwargs = dict(levels=levels_of(spec))
    if shorthand:  # the two-level form: local_steps, local_rounds, group_size, overlap_steps
        (k1, s, _), (period, _, options) = spec
        kwargs = dict(local_steps=k1, local_rounds=period // k1, group_size=s,
                      overlap_steps=options["overlap_steps"])
    opt = hvd_hier.DistributedOptimizer(torch.optim.SGD([w], lr=LR), named_parameters=[("w", w)],
                                        warmup_steps=warmup, flat_storage=flat_storage, **kwargs)
    stats = opt.averaging_stats()
    groups = [lv["groups"] for lv in stats["levels"]]
    periods = [lv["period"] for lv in stats["levels"]]
    outers, codecs, overlaps = simulation_args(spec)
    start = [init_values(0)] * size
    want = simulate_levels_sgd(start, grad_values, LR, groups, periods, warmup, steps, outers,
                               codecs, overlaps)
    plain = simulate_levels_sgd(start, grad_values, LR, groups, periods, warmup, steps, outers,
                                codecs)
    schedule = hvd_hier.HierSchedule(periods=periods, warmup_steps=warmup)
    label = name + (".flat" if flat_storage else "") + (".shorthand" if shorthand else "")
    for t in range(1, steps + 1):
        step(w, opt, rank, t)
        got = everyone(w, f"{label}.{t}")
        for r in range(size):
            assert np.array_equal(got[r], want[t - 1][r]), (
                f"{label}: step {t} (level {schedule.level_at(t)}), rank {r}: {got[r]} != "
                f"{want[t - 1][r]}")
        counts = [lv["averages"] for lv in opt.averaging_stats()["levels"]]
        assert counts == expected_counts(schedule, spec, t), (label, t, counts)
    # the overlap changed the trajectory (between t and t + D the simulation is not the plain
    # one; with these linear losses it meets it again at t + D)
    assert any(not np.array_equal(a[r], b[r]) for a, b in zip(want, plain) for r in range(size)), label
    report(label)


def k_avg(rank, size):
    """K-AVG (group_size=1), K = 4, D = 1, in the two-level form."""
    CONFIGS["kavg_d1"] = ([(1, 1, {}), (4, "all", dict(overlap_steps=1))], 0, 13)
    check_config("kavg_d1", rank, size, shorthand=True)


def resume(rank, size):
    """Checkpoints taken between t and t + D, with deterministic=True (warmup 1: the top
    level starts at step 9 and is due at 12, the middle one at odd steps, due one later):
    saves right after step 9 and after step 11 (both levels in flight), loaded into a new
    optimizer on every rank, give the same bits to step 20. Rank 0's save after step 10,
    loaded on rank 0 alone and broadcast as Horovod's pattern does, gives every rank rank 0's
    model and pending corrections: the same bits as every rank loading rank 0's checkpoint
    (not the uninterrupted run: the ranks' models differ in flight)."""
    levels = [(1, 2), Level(2, 4, overlap_steps=1),
              Level(8, "all", overlap_steps=3, outer=sgd(lr=0.5, momentum=0.5))]
    for at, everyone_loads in ((9, True), (10, False), (11, True)):
        def build():
            return random_model(levels)

        w, opt = build()
        want = []
        random_steps(w, opt, rank, 1, at, want)
        saved = (w.detach().clone(), copy.deepcopy(opt.state_dict()))
        pending = saved[1]["hvd_hier"]["overlap"]
        assert [(p["level"], p["due"]) for p in pending] == {
            9: [(2, 12)], 10: [(2, 12)], 11: [(2, 12), (1, 12)]}[at], pending
        random_steps(w, opt, rank, at + 1, 20, want)
        if not everyone_loads:  # then the run to compare with: every rank loads rank 0's
            saved = hvd.broadcast_object(saved, root_rank=0, name=f"overlap.saved.{at}")
            w3, opt3 = build()
            with torch.no_grad():
                w3.copy_(saved[0])
            opt3.load_state_dict(copy.deepcopy(saved[1]))  # a loaded optimizer holds its tensors
            want = want[:at]
            random_steps(w3, opt3, rank, at + 1, 20, want)
        opt2 = resume_and_compare(build, saved, rank, everyone_loads, at, 20, want)
    report("overlap_resume")


def nonfinite(rank, size):
    """K-AVG over 8 ranks with D = 1: rank 5's parameters turn NaN in step 4, when the global
    reduction starts. "raise": every rank raises at step 4, every finite rank keeps its
    values. "skip": at the end of step 5 rank 5 holds the other ranks' mean r of step 4,
    every other rank its own step-5 values plus r − s."""
    for policy in ("raise", "skip"):
        w = torch.nn.Parameter(torch.tensor(init_values(rank), dtype=torch.float64))
        opt = hvd_hier.DistributedOptimizer(
            torch.optim.SGD([w], lr=LR), named_parameters=[("w", w)], local_steps=1,
            local_rounds=4, group_size=1, overlap_steps=1, nonfinite=policy)

        def go(t):
            opt.zero_grad()
            g = torch.tensor(grad_values(rank, t), dtype=torch.float64)
            if rank == 5 and t == 4:
                g[2] = float("nan")
            (w * g).sum().backward()
            opt.step()

        for t in (1, 2, 3):
            go(t)
        before = everyone(w, f"nonfinite.{policy}.3")
        if policy == "raise":
            expect_error(hvd_hier.NonFiniteError,
                         "hvd_hier: the parameters of rank 5 hold inf or NaN at step 4, before "
                         "the global averaging of ranks [0, 1, 2, 3, 4, 5, 6, 7]; nothing was "
                         "averaged, so the other ranks' parameters are intact (nonfinite='skip' "
                         "would average the finite ranks instead)", go, 4)
            if rank != 5:
                want = before[rank] - LR * grad_values(rank, 4)
                assert np.array_equal(w.detach().numpy(), want), rank
            continue
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            go(4)
            snapshot = everyone(w, "nonfinite.skip.4")
            go(5)
        finite = [r for r in range(size) if r != 5]
        mean = sum(snapshot[r] for r in finite) * (1.0 / len(finite))
        if rank == 5:
            want = mean
        else:
            want = (snapshot[rank] - LR * grad_values(rank, 5)) + (mean - snapshot[rank])
        assert np.array_equal(w.detach().numpy(), want), (rank, w, want)
        assert opt.averaging_stats()["skipped_contributions"] == 1
    report("overlap_nonfinite")


def run():
    rank, size = init()
    assert size == 8, size
    for name in list(CONFIGS):
        check_config(name, rank, size)
    check_config("k1_d2", rank, size, flat_storage=True)
    k_avg(rank, size)
    resume(rank, size)
    nonfinite(rank, size)


if __name__ == "__main__":
    main(run)
