"""Levels with an outer optimizer, on 8 ranks (two host names), at every step against the
independent simulation of all learners (tests/reference.py): three levels with Nesterov
momentum at the top, outer optimizers at two levels with warmup, SGD(lr=1) equal to plain
averaging, flat storage, real-valued learning rates (to 1e-12), buffers averaged plainly, and
resumes mid-cycle: bit for bit with deterministic=True when every rank loads its checkpoint,
and from the first rank alone right after a global averaging.

Where the values are dyadic (learning rates and momenta of few bits, every group of 1, 2, 4 or
8 ranks) every result is exact and the comparison is exact equality.
"""

import copy
import functools
import warnings

import numpy as np
import torch

import horovod.torch as hvd
import hvd_hier
from hvd_hier import Level
from common import init, main, report
from levels import LR, everyone, grad_values, init_values, random_model, random_steps, resume_and_compare, make, step
from reference import simulate_levels_sgd


def sgd(**kw):
    return functools.partial(torch.optim.SGD, **kw)


CONFIGS = {
    # name: (levels, outer settings per level, warmup, steps, exact)
    "outer_three": ([(1, 2), (2, 4), (4, "all")],
                    [None, None, dict(lr=0.5, momentum=0.5, nesterov=True)], 0, 13, True),
    "outer_two_levels_warmup": ([(2, 2), (4, 4), (8, "all")],
                                [None, dict(lr=0.75, momentum=0.5),
                                 dict(lr=0.5, momentum=0.25, nesterov=True)], 3, 20, True),
    "outer_lr1_is_plain": ([(1, 2), (2, 4), (4, "all")],
                           [dict(lr=1.0), dict(lr=1.0), dict(lr=1.0)], 1, 12, True),
    "outer_real_values": ([(2, 4), (4, "all")],
                          [None, dict(lr=0.7, momentum=0.9, nesterov=True)], 2, 18, False),
}


def with_outer(levels, outers):
    return [lv if o is None else Level(*lv, outer=sgd(**o)) for lv, o in zip(levels, outers)]


def check_config(name, rank, size, flat_storage=False):
    levels, outers, warmup, steps, exact = CONFIGS[name]
    w, opt = make(rank, levels=with_outer(levels, outers), warmup_steps=warmup,
                  flat_storage=flat_storage)
    hvd.broadcast_parameters([("w", w)], root_rank=0)  # the anchors start from one model
    stats = opt.averaging_stats()
    groups = [lv["groups"] for lv in stats["levels"]]
    periods = [lv["period"] for lv in stats["levels"]]
    start = [init_values(0)] * size
    want = simulate_levels_sgd(start, grad_values, LR, groups, periods, warmup, steps, outers)
    if name == "outer_lr1_is_plain":  # and the plain simulation gives the same values
        plain = simulate_levels_sgd(start, grad_values, LR, groups, periods, warmup, steps)
        assert all(np.array_equal(a[r], b[r]) for a, b in zip(want, plain) for r in range(size))
    schedule = hvd_hier.HierSchedule(periods=periods, warmup_steps=warmup)
    label = name + (".flat" if flat_storage else "")
    for t in range(1, steps + 1):
        step(w, opt, rank, t)
        got = everyone(w, f"{label}.{t}")
        for r in range(size):
            ok = (np.array_equal(got[r], want[t - 1][r]) if exact else
                  np.allclose(got[r], want[t - 1][r], rtol=1e-12, atol=0))
            assert ok, f"{label}: step {t} (level {schedule.level_at(t)}), rank {r}: " \
                       f"{got[r]} != {want[t - 1][r]}"
        level = schedule.level_at(t)
        if level is not None and level != "sync":  # a group ends bit-identical
            for g in groups[level]:
                assert all(np.array_equal(got[g[0]], got[r]) for r in g), (label, t, g)
    report(label)


def buffers_average_plainly(rank, size):
    """A buffer is averaged at every level's reduction, never moved by the outer step."""
    w = torch.nn.Parameter(torch.tensor(init_values(0), dtype=torch.float64))
    b = torch.zeros(3, dtype=torch.float64)
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD([w], lr=LR), named_parameters=[("w", w)], buffers=[b],
        local_steps=1, local_rounds=2, group_size=4,
        outer=sgd(lr=0.5, momentum=0.5, nesterov=True))
    groups = opt.averaging_stats()["groups"]
    for t in range(1, 7):
        b.fill_(float(rank * t))
        step(w, opt, rank, t)
        members = list(range(size)) if t % 2 == 0 else next(g for g in groups if rank in g)
        assert b.tolist() == [sum(r * t for r in members) / len(members)] * 3, (t, b)
    report("outer_buffers")


def under_grad_scaler(rank, size):
    """torch.amp.GradScaler with warmup: its step() is called in warmup too, and the anchors
    must still be taken at the first step after warmup (power-of-two scales: exact)."""
    levels = [(1, 2), (2, 4), (4, "all")]
    outers = [None, None, dict(lr=0.5, momentum=0.5, nesterov=True)]
    warmup, steps = 3, 12
    w, opt = make(rank, levels=with_outer(levels, outers), warmup_steps=warmup)
    hvd.broadcast_parameters([("w", w)], root_rank=0)
    groups = [lv["groups"] for lv in opt.averaging_stats()["levels"]]
    want = simulate_levels_sgd([init_values(0)] * size, grad_values, LR, groups, [1, 2, 4],
                               warmup, steps, outers)
    scaler = torch.amp.GradScaler("cpu", init_scale=16.0, growth_interval=1000)
    anchor = opt.hier_state().levels[2].anchor
    for t in range(1, steps + 1):
        opt.zero_grad()
        scaler.scale((w * torch.tensor(grad_values(rank, t), dtype=torch.float64)).sum()).backward()
        scaler.step(opt)
        scaler.update()
        assert anchor.taken == (t > warmup), (t, anchor.taken)
        got = everyone(w, f"amp.{t}")
        for r in range(size):
            assert np.array_equal(got[r], want[t - 1][r]), f"amp: step {t}, rank {r}"
    report("outer_amp_warmup")


def resume(rank, size):
    """deterministic=True, float32 values. Outer optimizers at two levels, saved after step 7
    (mid-cycle, outer momentum at both), loaded into a new optimizer on every rank: the same
    bits to step 16. Outer optimizer at the top only, saved right after the global averaging
    of step 9 and loaded on rank 0 alone, then broadcast as Horovod's pattern does: the same
    bits too (the inner optimizer without momentum, whose state would be rank 0's). A state
    dict holds references, as torch's do: copied here as torch.save would."""
    top = Level(4, "all", outer=sgd(lr=0.7, momentum=0.9, nesterov=True))
    cases = [(7, True, [(1, 2), Level(2, 4, outer=sgd(lr=0.8, momentum=0.6)), top], 0.5),
             (9, False, [(1, 2), (2, 4), top], 0.0)]
    for at, everyone_loads, levels, momentum in cases:
        def build():
            return random_model(levels, momentum)

        w, opt = build()
        want = []
        random_steps(w, opt, rank, 1, at, want)
        saved = (w.detach().clone(), copy.deepcopy(opt.state_dict()))
        random_steps(w, opt, rank, at + 1, 16, want)
        assert saved[1]["hvd_hier"]["anchors"][-1]["outer"]["state"], "no outer momentum saved"
        opt2 = resume_and_compare(build, saved, rank, everyone_loads, at, 16, want)
    # a plain optimizer's state dict: the schedule and the anchors start again
    plain = torch.optim.SGD([torch.nn.Parameter(torch.zeros(37))], lr=0.05).state_dict()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        opt2.load_state_dict(plain)
    anchors = [lv.anchor for lv in opt2.hier_state().levels if lv.anchor is not None]
    assert anchors and not any(a.taken or a.outer.state for a in anchors)
    report("outer_resume")


def run():
    rank, size = init()
    assert size == 8, size
    for name in CONFIGS:
        check_config(name, rank, size)
    check_config("outer_three", rank, size, flat_storage=True)
    buffers_average_plainly(rank, size)
    under_grad_scaler(rank, size)
    resume(rank, size)


if __name__ == "__main__":
    main(run)
