"""N averaging levels on 8 ranks (two host names, 4 ranks each), at every step against an
independent simulation of all learners (tests/reference.py): three levels with and without
warmup, uneven periods, explicit rank lists, "local" as a middle level, the two-level form
against levels= bit for bit, a resume from a checkpoint mid-cycle, per-level statistics, and
levels whose groups do not nest (refused on every rank).

Values are small dyadic rationals and every group has 1, 2, 4 or 8 ranks, so every average is
exact and the comparison is exact equality.
"""

import numpy as np
import torch

import horovod.torch as hvd
import hvd_hier
from common import expect_error, init, main, report
from reference import simulate_levels_sgd

DIM = 6
LR = 0.25
CONFIGS = {
    # name: (levels, warmup, steps)
    "three": ([(1, 2), (2, 4), (4, "all")], 0, 12),
    "three_warmup": ([(1, 2), (2, 4), (4, "all")], 3, 13),
    "uneven_periods": ([(3, 2), (6, 4), (12, "all")], 0, 26),
    "rank_lists": ([(1, [[0, 4], [2, 6], [1, 5], [3, 7]]), (2, [[0, 2, 4, 6], [1, 3, 5, 7]]),
                    (4, 8)], 1, 11),
    "local_middle": ([(1, 2), hvd_hier.Level(2, "local"), (8, "all")], 0, 17),
    "equal_periods": ([(2, 2), (2, 4), (6, "all")], 0, 12),
}


def init_values(rank):
    return (rank + 1) + 0.25 * (np.arange(DIM) % 4)


def grad_values(rank, t):
    return (rank + 1) * (t % 3 + 1) + 0.5 * (np.arange(DIM) % 4)


def make(rank, **kwargs):
    w = torch.nn.Parameter(torch.tensor(init_values(rank), dtype=torch.float64))
    opt = hvd_hier.DistributedOptimizer(torch.optim.SGD([w], lr=LR), named_parameters=[("w", w)],
                                        **kwargs)
    return w, opt


def step(w, opt, rank, t):
    opt.zero_grad()
    (w * torch.tensor(grad_values(rank, t), dtype=torch.float64)).sum().backward()
    opt.step()


def random_model(levels, momentum=0.0):
    """37 random values (the same on every rank), plain SGD (lr 0.05, ``momentum``) under
    hvd_hier with ``levels``, one warmup step, deterministic: (parameter, optimizer)."""
    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(37, generator=g))
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD([w], lr=0.05, momentum=momentum), named_parameters=[("w", w)],
        levels=levels, warmup_steps=1, deterministic=True)
    return w, opt


def random_steps(w, opt, rank, first, last, trace):
    """Steps ``first`` .. ``last`` on a random quadratic of 37 values (the same on every run,
    its own on each rank), recording the parameters after each into ``trace``."""
    for t in range(first, last + 1):
        g = torch.Generator().manual_seed(1000 * t + rank)
        opt.zero_grad()
        (w * torch.randn(37, generator=g)).pow(2).sum().backward()
        opt.step()
        trace.append(w.detach().clone())


def resume_and_compare(build, saved, rank, everyone_loads, at, last, want):
    """A new ``build()`` resumed from ``saved`` (the parameter and the state dict after step
    ``at``), loaded on every rank or on rank 0 alone and broadcast as Horovod's pattern
    does, must give ``want`` (the parameters after each step from 1) to step ``last`` bit for
    bit. Returns the new optimizer."""
    w, opt = build()
    if everyone_loads or rank == 0:
        with torch.no_grad():
            w.copy_(saved[0])
        opt.load_state_dict(saved[1])
    if not everyone_loads:
        hvd.broadcast_parameters([("w", w)], root_rank=0)
        hvd.broadcast_optimizer_state(opt, root_rank=0)
    got = []
    random_steps(w, opt, rank, at + 1, last, got)
    for t, (a, b) in enumerate(zip(got, want[at:]), start=at + 1):
        assert torch.equal(a, b), f"resume from {at} (all load: {everyone_loads}): step {t}"
    return opt


def everyone(w, name):
    return hvd.allgather(w.detach().reshape(1, -1), name=name).numpy()


def check_config(name, rank, size):
    levels, warmup, steps = CONFIGS[name]
    w, opt = make(rank, levels=levels, warmup_steps=warmup)
    stats = opt.averaging_stats()
    level_groups = [lv["groups"] for lv in stats["levels"]]
    if name == "local_middle":  # horovodrun places ranks 0-3 on localhost, 4-7 on 127.0.0.1
        assert level_groups[1] == [[0, 1, 2, 3], [4, 5, 6, 7]], level_groups
    periods = [lv["period"] for lv in stats["levels"]]
    want = simulate_levels_sgd([init_values(r) for r in range(size)], grad_values, LR,
                               level_groups, periods, warmup, steps)
    schedule = hvd_hier.HierSchedule(periods=periods, warmup_steps=warmup)
    for t in range(1, steps + 1):
        step(w, opt, rank, t)
        got = everyone(w, f"{name}.{t}")
        for r in range(size):
            assert np.array_equal(got[r], want[t - 1][r]), (
                f"{name}: step {t} (level {schedule.level_at(t)}), rank {r}: {got[r]} != {want[t - 1][r]}")
        counts = [lv["averages"] for lv in opt.averaging_stats()["levels"]]
        assert counts == schedule.level_counts_through(t), (name, t, counts)
    stats = opt.averaging_stats()
    assert stats["global_averages"] == schedule.level_counts_through(steps)[-1]
    assert stats["local_averages"] == sum(schedule.level_counts_through(steps)[:-1])
    report(name)


def two_level_form_is_levels_bit_for_bit(rank):
    """Random float32 values (no exactness by construction): the shorthand and levels= must
    still produce the same bits, the same counters and the same groups."""
    results = []
    for kwargs in (dict(local_steps=2, local_rounds=3, group_size=2),
                   dict(levels=[(2, 2), (6, "all")])):
        g = torch.Generator().manual_seed(rank)
        w = torch.nn.Parameter(torch.randn(40, generator=g))
        opt = hvd_hier.DistributedOptimizer(torch.optim.SGD([w], lr=0.1, momentum=0.9),
                                            named_parameters=[("w", w)], warmup_steps=1, **kwargs)
        trace = []
        for t in range(1, 14):
            opt.zero_grad()
            (w * torch.randn(40, generator=g)).pow(2).sum().backward()
            opt.step()
            trace.append(w.detach().clone())
        stats = opt.averaging_stats()
        results.append((trace, {k: stats[k] for k in ("local_averages", "global_averages",
                                                       "bytes_local", "bytes_global", "groups")}))
    (a, sa), (b, sb) = results
    assert all(torch.equal(x, y) for x, y in zip(a, b)), "two-level form and levels= differ"
    assert sa == sb, (sa, sb)
    report("two_level_form")


def resume_mid_cycle(rank, size):
    """Uneven periods (3, 6, 12): save after step 7 (mid cycle of every level), build a new
    optimizer, load, go on to step 26: equal to the uninterrupted run at every step."""
    levels, warmup, steps = CONFIGS["uneven_periods"]
    w, opt = make(rank, levels=levels, warmup_steps=warmup)
    groups = [lv["groups"] for lv in opt.averaging_stats()["levels"]]
    want = simulate_levels_sgd([init_values(r) for r in range(size)], grad_values, LR, groups,
                               [3, 6, 12], warmup, steps)
    for t in range(1, 8):
        step(w, opt, rank, t)
    saved_w, saved_opt = w.detach().clone(), opt.state_dict()
    assert saved_opt["hvd_hier"]["config"] == {
        "levels": [(3, 2, ()), (6, 4, ()), (12, "all", ())], "warmup_steps": 0}
    w2, opt2 = make(rank, levels=levels, warmup_steps=warmup)
    with torch.no_grad():
        w2.copy_(saved_w)
    opt2.load_state_dict(saved_opt)
    for t in range(8, steps + 1):
        step(w2, opt2, rank, t)
        got = everyone(w2, f"resume.{t}")
        for r in range(size):
            assert np.array_equal(got[r], want[t - 1][r]), (f"resume: step {t}, rank {r}")
    counts = [lv["averages"] for lv in opt2.averaging_stats()["levels"]]
    assert counts == hvd_hier.HierSchedule(periods=(3, 6, 12)).level_counts_through(steps), counts
    report("resume_mid_cycle")


def groups_that_do_not_nest(rank):
    """"local" inside, pairs above: the pairs are not unions of the hosts' groups. Known
    only once the hosts are, yet every rank raises the same error."""
    expect_error(
        ValueError,
        "the groups of levels[1] ([[0, 1], [2, 3], [4, 5], [6, 7]]) are not unions of the groups "
        "of levels[0] ([[0, 1, 2, 3], [4, 5, 6, 7]]): group [0, 1, 2, 3] of levels[0] is split; "
        "each level's groups must be made of whole groups of the level below",
        make, rank, levels=[(1, "local"), (2, 2), (4, "all")])
    report("not_nested")


def run():
    rank, size = init()
    assert size == 8, size
    for name in CONFIGS:
        check_config(name, rank, size)
    two_level_form_is_levels_bit_for_bit(rank)
    resume_mid_cycle(rank, size)
    groups_that_do_not_nest(rank)


if __name__ == "__main__":
    main(run)
