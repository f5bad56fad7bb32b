"""Streaming fragments (``Level(..., fragments=F)``) on 8 ranks (two host names), at every step
against the independent simulation of all learners (tests/reference.py), which reduces
fragment f alone at the steps u = (f + 1)·period/F (mod period), after the level below
averaged the whole model: plain, under an outer optimizer (each fragment its own), with int8,
int2 and top-k deltas, overlapped, with groups of one below, as the only level; the split
(written here from its definition), the counters (one averaging per fragment, of the
fragment's bytes), and a resume mid-cycle bit for bit.

A model of five float64 tensors; values are dyadic and every group has 1, 2, 4 or 8 ranks,
so the comparisons are exact.
"""

import copy
import functools

import numpy as np
import torch

import horovod.torch as hvd
import hvd_hier
from hvd_hier import Level
from common import init, main, report
from reference import simulate_levels_sgd

SIZES = (700, 1500, 300, 2600, 900)
LR = 0.25
NESTEROV = dict(lr=0.5, momentum=0.5, nesterov=True)


def init_values(rank):
    n = sum(SIZES)
    return np.round(np.sin(np.arange(n) * 0.37) * 4 * 256) / 256 + (rank + 1) * 0.125


def grad_values(rank, t):
    n = sum(SIZES)
    return np.round(np.cos(np.arange(n) * (0.011 * (rank + 1)) + t) * (rank + 1) * 32) / 64


def split(count):
    """The fragments' tensors from the definition: the tensors, largest first, each join the
    fragment with the fewest bytes so far (the first on a tie); in order within each."""
    loads, out = [0] * count, [[] for _ in range(count)]
    for n, i in sorted(((n, i) for i, n in enumerate(SIZES)), key=lambda x: (-x[0], x[1])):
        f = loads.index(min(loads))
        out[f].append(i)
        loads[f] += n
    return [sorted(part) for part in out]


def positions(count):
    """Each fragment's element positions in the concatenated model."""
    starts = np.cumsum((0,) + SIZES)
    return [np.concatenate([np.arange(starts[i], starts[i + 1]) for i in part])
            for part in split(count)]


CONFIGS = {
    # name: (levels as (period, group_size, options), warmup, steps)
    "plain_f4": ([(1, 2, {}), (2, 4, {}), (8, "all", dict(fragments=4))], 1, 18),
    "outer_f4": ([(1, 4, {}), (8, "all", dict(fragments=4, outer=NESTEROV))], 2, 19),
    "int8_f2": ([(1, 2, {}), (2, 4, {}), (4, "all", dict(fragments=2, compression="int8"))],
                1, 14),
    "topk_outer_f2": ([(2, 4, {}), (8, "all", dict(fragments=2, outer=NESTEROV,
                                                   compression=hvd_hier.TopK(0.05, "int4")))],
                      0, 17),
    "overlap_f2": ([(1, 2, {}), (2, 4, {}), (8, "all", dict(fragments=2, overlap_steps=2))],
                   1, 19),
    "overlap_int2_outer_f4": ([(1, 4, {}), (8, "all", dict(fragments=4, overlap_steps=1,
                                                           outer=NESTEROV,
                                                           compression="int2"))], 0, 18),
    "kavg_f2": ([(1, 1, {}), (4, "all", dict(fragments=2, outer=NESTEROV))], 0, 13),
    "alone_f3": ([(6, "all", dict(fragments=3, outer=dict(lr=0.5, momentum=0.5)))], 0, 14),
}


def levels_of(spec):
    return [Level(p, s, **{k: functools.partial(torch.optim.SGD, **v) if k == "outer" else v
                           for k, v in o.items()}) for p, s, o in spec]


def build(spec, warmup, deterministic=False):
    ws = [torch.nn.Parameter(torch.tensor(v, dtype=torch.float64))
          for v in np.split(init_values(0), np.cumsum(SIZES)[:-1])]
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD(ws, lr=LR), named_parameters=[(f"w{i}", w) for i, w in enumerate(ws)],
        levels=levels_of(spec), warmup_steps=warmup, deterministic=deterministic)
    return ws, opt


def step(ws, opt, rank, t):
    opt.zero_grad()
    g = torch.tensor(grad_values(rank, t), dtype=torch.float64)
    sum((w * part).sum() for w, part in zip(ws, torch.split(g, SIZES))).backward()
    opt.step()


def gathered(ws, name):
    flat = torch.cat([w.detach().reshape(-1) for w in ws]).reshape(1, -1)
    return hvd.allgather(flat, name=name).numpy()


def simulate(spec, groups, periods, warmup, steps, size, whole=False):
    """The simulation of ``spec`` (``whole``: without its fragments)."""
    return simulate_levels_sgd(
        [init_values(0)] * size, grad_values, LR, groups, periods, warmup, steps,
        [o.get("outer") for _, _, o in spec], [o.get("compression") for _, _, o in spec],
        [o.get("overlap_steps", 0) for _, _, o in spec],
        [positions(o["fragments"]) if o.get("fragments") and not whole else None
         for _, _, o in spec])


def check_config(name, rank, size):
    spec, warmup, steps = CONFIGS[name]
    ws, opt = build(spec, warmup)
    stats = opt.averaging_stats()
    groups = [lv["groups"] for lv in stats["levels"]]
    periods = [lv["period"] for lv in stats["levels"]]
    want = simulate(spec, groups, periods, warmup, steps, size)
    whole = simulate(spec, groups, periods, warmup, steps, size, whole=True)
    assert not np.array_equal(want[-1][0], whole[-1][0]), name  # the fragments mattered
    count = spec[-1][2]["fragments"]
    schedule = opt.hier_state().config.schedule
    assert [p.tensors for p in opt.hier_state().levels[-1].parts] == [
        [ws[i] for i in part] for part in split(count)], name
    moved = []
    for t in range(1, steps + 1):
        before = opt.averaging_stats()["levels"][-1]["bytes"]
        step(ws, opt, rank, t)
        got = gathered(ws, f"{name}.{t}")
        for r in range(size):
            assert np.array_equal(got[r], want[t - 1][r]), (
                f"{name}: step {t} (level {schedule.level_at(t)}, fragment "
                f"{schedule.fragment_at(t)}), rank {r}: max difference "
                f"{np.abs(got[r] - want[t - 1][r]).max()}")
        moved.append(opt.averaging_stats()["levels"][-1]["bytes"] - before)
    # one averaging per fragment's step; plain fragments move their own bytes, each about
    # 1/F of the model (the split's sizes differ by at most one tensor)
    u = steps - warmup
    assert opt.averaging_stats()["levels"][-1]["averages"] == u // (periods[-1] // count)
    if "compression" not in spec[-1][2]:
        sizes = [8 * sum(SIZES[i] for i in part) for part in split(count)]
        due = [(t, schedule.fragment_at(t)) for t in range(1, steps + 1)
               if schedule.level_at(t) == len(spec) - 1]
        assert [moved[t - 1] for t, _ in due] == [sizes[f] for _, f in due], (name, moved)
    report(name)


def resume(rank, size):
    """int2 fragments under an outer optimizer, overlapped: saved after step 10 (fragment 0's
    reduction in flight, its correction due at 11), loaded into a new optimizer on every
    rank (anchors, outer momentum and residuals of every fragment, the pending correction),
    the same bits to 20."""
    spec, warmup = CONFIGS["overlap_int2_outer_f4"][0], 0
    ws, opt = build(spec, warmup, deterministic=True)
    want = []
    for t in range(1, 21):
        step(ws, opt, rank, t)
        want.append([w.detach().clone() for w in ws])
        if t == 10:
            saved = ([w.detach().clone() for w in ws], copy.deepcopy(opt.state_dict()))
    state = saved[1]["hvd_hier"]
    assert len(state["anchors"][-1]["fragments"]) == 4
    assert [(p["level"], p["start"], p["due"]) for p in state["overlap"]] == [(1, 10, 11)]
    ws2, opt2 = build(spec, warmup, deterministic=True)
    with torch.no_grad():
        for a, b in zip(ws2, saved[0]):
            a.copy_(b)
    opt2.load_state_dict(saved[1])
    for t in range(11, 21):
        step(ws2, opt2, rank, t)
        assert all(torch.equal(a, b) for a, b in zip(ws2, want[t - 1])), f"resume: step {t}"
    report("fragments_resume")


def run():
    rank, size = init()
    assert size == 8, size
    for name in CONFIGS:
        check_config(name, rank, size)
    resume(rank, size)


if __name__ == "__main__":
    main(run)
