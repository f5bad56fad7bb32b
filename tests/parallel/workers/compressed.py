"""Levels with compressed reductions on 8 ranks (two host names), at every step against the
independent simulation of all learners, which encodes, sums and decodes the deltas from the
wire format's definition (tests/reference.py): each codec at the top of three levels, the
integer codecs with their error residuals, compression under an outer optimizer, a compressed middle level,
flat storage; every group ends each reduction bit-identical, and the byte counters follow
the encoded size. A resume mid-cycle (int8: the residuals in the checkpoint) is bit for bit.

float64 parameters with small dyadic steps: local steps are exact, every delta is rounded to
float32 once, exactly as the simulation does, so the comparison is exact equality.
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
from reference import NoFeedback, compressed_mean, simulate_levels_sgd

DIM = 5000  # three chunks of the wire format, the last one partial
LR = 0.25


TOPK2 = hvd_hier.TopK(0.02, values="int2")


def init_values(rank):
    return np.round(np.sin(np.arange(DIM) * 0.37) * 4 * 256) / 256 + (rank + 1) * 0.125


def grad_values(rank, t):  # multiples of 1/64: warmup averages and local steps are exact
    return np.round(np.cos(np.arange(DIM) * (0.011 * (rank + 1)) + t) * (rank + 1) * 32) / 64


def sgd(**kw):
    return functools.partial(torch.optim.SGD, **kw)


CONFIGS = {
    # name: (periods and group sizes, per-level codec, per-level outer, warmup, steps)
    "fp16_top": ([(1, 2), (2, 4), (4, "all")], [None, None, "fp16"], None, 1, 13),
    "bf16_top": ([(1, 2), (2, 4), (4, "all")], [None, None, "bf16"], None, 1, 13),
    "int8_top": ([(1, 2), (2, 4), (4, "all")], [None, None, "int8"], None, 1, 13),
    "int8_middle_bf16_top": ([(1, 2), (2, 4), (4, "all")], [None, "int8", "bf16"], None, 0, 12),
    "bf16_outer": ([(2, 4), (4, "all")], [None, "bf16"],
                   [None, dict(lr=0.5, momentum=0.5, nesterov=True)], 2, 14),
    # int4 and int2: every contribution gathered and summed (two stages at the top: one
    # delta per node, from its mean); int2 at a one-stage middle level and under an outer
    # optimizer
    "int4_top": ([(1, 2), (2, 4), (4, "all")], [None, None, "int4"], None, 1, 13),
    "int2_top": ([(1, 2), (2, 4), (4, "all")], [None, None, "int2"], None, 1, 13),
    "int2_middle_int4_top": ([(1, 2), (2, 4), (4, "all")], [None, "int2", "int4"], None, 0, 12),
    "int2_outer": ([(2, 4), (4, "all")], [None, "int2"],
                   [None, dict(lr=0.5, momentum=0.5, nesterov=True)], 2, 14),
    # top-k: 2% of each chunk in 2-bit values at the top (two stages), 10% in int8 in the
    # middle, and under an outer optimizer
    "topk_top": ([(1, 2), (2, 4), (4, "all")], [None, None, TOPK2], None, 1, 13),
    "topk_middle_topk_top": ([(1, 2), (2, 4), (4, "all")],
                             [None, hvd_hier.TopK(0.1, values="int8"), TOPK2], None, 0, 12),
    "topk_outer": ([(2, 4), (4, "all")], [None, hvd_hier.TopK(0.05, values="int4")],
                   [None, dict(lr=0.5, momentum=0.5, nesterov=True)], 2, 14),
    # error_feedback=False: what the encoding lost is dropped (the ablation)
    "int2_top_no_feedback": ([(1, 2), (2, 4), (4, "all")], [None, None, NoFeedback("int2")],
                             None, 1, 13),
    "topk_outer_no_feedback": ([(2, 4), (4, "all")],
                               [None, NoFeedback(hvd_hier.TopK(0.05, values="int4"))],
                               [None, dict(lr=0.5, momentum=0.5, nesterov=True)], 2, 14),
}


def level_options(codec, outer):
    """A Level's keyword options for a simulated codec (``NoFeedback``: error_feedback=False)
    and outer optimizer."""
    out = {} if outer is None else {"outer": sgd(**outer)}
    if isinstance(codec, NoFeedback):
        return {**out, "compression": codec.codec, "error_feedback": False}
    return out if codec is None else {**out, "compression": codec}


def build(rank, levels, codecs, outers, warmup, flat_storage=False):
    levels = [Level(p, s, **level_options(c, o))
              for (p, s), c, o in zip(levels, codecs, outers or [None] * len(levels))]
    w = torch.nn.Parameter(torch.tensor(init_values(0), dtype=torch.float64))
    opt = hvd_hier.DistributedOptimizer(torch.optim.SGD([w], lr=LR), named_parameters=[("w", w)],
                                        levels=levels, warmup_steps=warmup,
                                        flat_storage=flat_storage)
    return w, opt


def step(w, opt, rank, t):
    opt.zero_grad()
    (w * torch.tensor(grad_values(rank, t), dtype=torch.float64)).sum().backward()
    opt.step()


def check_config(name, rank, size, flat_storage=False):
    levels, codecs, outers, warmup, steps = CONFIGS[name]
    w, opt = build(rank, levels, codecs, outers, warmup, flat_storage)
    stats = opt.averaging_stats()
    groups = [lv["groups"] for lv in stats["levels"]]
    periods = [lv["period"] for lv in stats["levels"]]
    want = simulate_levels_sgd([init_values(0)] * size, grad_values, LR, groups, periods, warmup,
                               steps, outers, codecs)
    plain = simulate_levels_sgd([init_values(0)] * size, grad_values, LR, groups, periods, warmup,
                                steps, outers)
    schedule = hvd_hier.HierSchedule(periods=periods, warmup_steps=warmup)
    label = name + (".flat" if flat_storage else "")
    for t in range(1, steps + 1):
        step(w, opt, rank, t)
        got = hvd.allgather(w.detach().reshape(1, -1), name=f"{label}.{t}").numpy()
        for r in range(size):
            assert np.array_equal(got[r], want[t - 1][r]), (
                f"{label}: step {t} (level {schedule.level_at(t)}), rank {r}: max difference "
                f"{np.abs(got[r] - want[t - 1][r]).max()}")
        level = schedule.level_at(t)
        if level is not None and level != "sync":
            for g in groups[level]:
                assert all(np.array_equal(got[g[0]], got[r]) for r in g), (label, t, g)
    # the codecs did something, and stayed close to the uncompressed run
    gap = max(np.abs(want[-1][r] - plain[-1][r]).max() for r in range(size))
    assert 0 < gap < (4.0 if any(not isinstance(c, (str, type(None))) for c in codecs)
                      else 1.0), (label, gap)
    encoded = {"fp16": 4096, "bf16": 4096, "int8": 2064, "int4": 1040, "int2": 528,
               TOPK2: 112, hvd_hier.TopK(0.1, values="int8"): 640,
               hvd_hier.TopK(0.05, values="int4"): 288}
    for i, codec in enumerate(codecs):
        codec = codec.codec if isinstance(codec, NoFeedback) else codec
        lv = opt.averaging_stats()["levels"][i]
        if codec is not None:
            assert lv["bytes"] == lv["averages"] * 3 * encoded[codec], (label, i, lv)
    report(label)


def resume(rank, size):
    """int8 at the middle level, int2 with an outer optimizer at the top; save after step 7,
    load on every rank (residuals included), the same bits to step 16; without the
    residuals (loaded from a checkpoint that lacks them) the run differs."""
    levels, codecs = [(1, 2), (2, 4), (4, "all")], [None, "int8", "int2"]
    outers = [None, None, dict(lr=0.5, momentum=0.5)]
    w, opt = build(rank, levels, codecs, outers, 1)
    want = []
    for t in range(1, 17):
        step(w, opt, rank, t)
        want.append(w.detach().clone())
        if t == 7:
            saved = (w.detach().clone(), copy.deepcopy(opt.state_dict()))
    assert saved[1]["hvd_hier"]["anchors"][1]["compression"]["codec"] == "int8"
    assert saved[1]["hvd_hier"]["anchors"][2]["compression"]["codec"] == "int2"
    w2, opt2 = build(rank, levels, codecs, outers, 1)
    with torch.no_grad():
        w2.copy_(saved[0])
    opt2.load_state_dict(saved[1])
    for t in range(8, 17):
        step(w2, opt2, rank, t)
        assert torch.equal(w2, want[t - 1]), f"resume: step {t}"
    lost = copy.deepcopy(saved[1])
    lost["hvd_hier"]["anchors"][1]["compression"] = None  # zero residuals instead
    lost["hvd_hier"]["anchors"][2]["compression"] = None
    w3, opt3 = build(rank, levels, codecs, outers, 1)
    with torch.no_grad():
        w3.copy_(saved[0])
    opt3.load_state_dict(lost)
    for t in range(8, 17):
        step(w3, opt3, rank, t)
    assert not torch.equal(w3, want[-1]), "the residuals made no difference"
    report("compressed_resume")


def nonfinite_skip(rank, size):
    """int8 over all 8 ranks, nonfinite="skip": rank 3's parameters turn NaN before the
    reduction of step 2; it contributes a zero delta, the others' mean divides by 7, and
    every rank (rank 3 too) ends with the anchor plus that mean."""
    w = torch.nn.Parameter(torch.tensor(init_values(0), dtype=torch.float64))
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD([w], lr=LR), named_parameters=[("w", w)], nonfinite="skip",
        levels=[Level(2, "all", compression="int8")])
    for t in (1, 2):
        opt.zero_grad()
        g = torch.tensor(grad_values(rank, t), dtype=torch.float64)
        if rank == 3 and t == 2:
            g[7] = float("nan")
        (w * g).sum().backward()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            opt.step()
    a0 = init_values(0)
    local = {r: a0 - LR * grad_values(r, 1) - LR * grad_values(r, 2) for r in range(size)}
    deltas = [(local[r] - a0).astype(np.float32) for r in range(size) if r != 3]
    expected = a0 + compressed_mean(deltas, "int8", size - 1).astype(np.float64)
    assert np.array_equal(w.detach().numpy(), expected), np.abs(w.detach().numpy() - expected).max()
    assert opt.averaging_stats()["skipped_contributions"] == 1
    report("compressed_nonfinite_skip")


def reset_zeroes_residuals(rank, size):
    """An elastic reset (Horovod initialised again: here the optimizer is told its groups
    belong to an older Horovod instance) rebuilds the groups and zeroes every rank's
    residuals, int8 and int2 alike: what a codec lost belongs to the model this rank had,
    and after a reset every rank takes rank 0's. The run goes on, groups bit-identical."""
    levels, codecs = [(1, 2), (2, 4), (4, "all")], [None, "int8", "int2"]
    w, opt = build(rank, levels, codecs, None, 1)
    h = opt.hier_state()
    schedule = hvd_hier.HierSchedule(periods=[1, 2, 4], warmup_steps=1)
    def largest(i):  # the largest residual of level i on any rank (two stages: the
        # residuals are those of the ranks that encode their node's delta)
        mine = max(r.abs().max() for r in h.levels[i].reducer.residuals).reshape(1)
        return hvd.allreduce(mine, op=hvd.Max, name=f"reset.residual.{i}").item()

    for t in range(1, 6):
        step(w, opt, rank, t)
    assert largest(1) > 0 and largest(2) > 0
    assert schedule.level_at(6) == 0  # no compressed reduction in the step of the reset
    h.position.generation = None  # an older Horovod's
    step(w, opt, rank, 6)
    assert all(r.abs().max() == 0 for i in (1, 2) for r in h.levels[i].reducer.residuals)
    for t in range(7, 10):
        step(w, opt, rank, t)
    got = hvd.allgather(w.detach().reshape(1, -1), name="reset.w").numpy()
    assert all(np.array_equal(got[0], got[r]) for r in range(size))  # step 9: all of them
    assert largest(2) > 0
    report("compressed_reset")


def run():
    rank, size = init()
    assert size == 8, size
    for name in CONFIGS:
        check_config(name, rank, size)
    check_config("int8_top", rank, size, flat_storage=True)
    check_config("int2_top", rank, size, flat_storage=True)
    resume(rank, size)
    nonfinite_skip(rank, size)
    reset_zeroes_residuals(rank, size)


if __name__ == "__main__":
    main(run)
