"""Checkpoints written by an earlier hvd_hier still resume, bit for bit.

``write DIR``: train two optimizers on 4 ranks, save a checkpoint in the middle of a cycle
(an overlapped reduction in flight, so its correction, the anchors, the outer momentum and
the int8 residuals are all in it), then keep training and record every later step's
parameters and the final counters (``expected.pt``). ``check DIR``: load those files with
this hvd_hier, take the same steps, and compare every step bit for bit.

The files in ``tests/fixtures/checkpoint_v1`` were written with ``write`` by the hvd_hier
of commit ce86478 (before the package was reshaped into subpackages).
"""

import functools
import sys
from pathlib import Path

import torch

import horovod.torch as hvd
import hvd_hier
from common import init, main, report

SAVE_AT, STEPS = 6, 14
OUTER = functools.partial(torch.optim.SGD, lr=0.7, momentum=0.5, nesterov=True)


def build(kind, rank):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5),
                                torch.nn.Linear(5, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(rank / 16)
    sgd = torch.optim.SGD(model.parameters(), lr=1 / 32, momentum=0.5)
    if kind == "levels":  # two stages, int8, outer, overlap at the global level
        opt = hvd_hier.DistributedOptimizer(
            sgd, named_parameters=model.named_parameters(), warmup_steps=1,
            levels=[hvd_hier.Level(1, 2), hvd_hier.Level(4, "all", outer=OUTER,
                                                         compression="int8", overlap_steps=2)],
            buffers=model.buffers(), deterministic=True)
    else:  # the two-level form, flat storage, outer at the global level
        opt = hvd_hier.DistributedOptimizer(
            sgd, named_parameters=model.named_parameters(), local_steps=2, local_rounds=2,
            group_size=2, outer=OUTER, flat_storage=True, deterministic=True)
    return model, opt


def step(model, opt, rank, t):
    x = torch.linspace(-1, 1, 12).reshape(2, 6) * (rank + 1) * (t % 3 + 1) / 4
    opt.zero_grad()
    model(x).pow(2).sum().backward()
    opt.step()


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def counters(opt):
    s = opt.averaging_stats()
    return {k: s[k] for k in ("steps", "local_averages", "global_averages", "bytes_local",
                              "bytes_global", "skipped_steps", "skipped_contributions")}


def write(root: Path, rank):
    for kind in ("levels", "shorthand"):
        model, opt = build(kind, rank)
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        for t in range(1, SAVE_AT + 1):
            step(model, opt, rank, t)
        hvd_hier.save_checkpoint(root / kind, model, opt, t=SAVE_AT)
        after = []
        for t in range(SAVE_AT + 1, STEPS + 1):
            step(model, opt, rank, t)
            after.append(params(model))
        torch.save({"params": after, "counters": counters(opt)},
                   root / kind / f"expected{rank}.pt")
        report(f"wrote {kind}")


def check(root: Path, rank):
    for kind in ("levels", "shorthand"):
        model, opt = build(kind, rank)
        extra = hvd_hier.load_checkpoint(root / kind, model, opt)
        assert extra == {"t": SAVE_AT}, extra
        expected = torch.load(root / kind / f"expected{rank}.pt")
        for t in range(SAVE_AT + 1, STEPS + 1):
            step(model, opt, rank, t)
            for i, (a, b) in enumerate(zip(params(model), expected["params"][t - SAVE_AT - 1])):
                assert torch.equal(a, b), (kind, t, i, (a - b).abs().max().item())
        assert counters(opt) == expected["counters"], (counters(opt), expected["counters"])
        report(f"resumed {kind}")


def run():
    rank, size = init()
    assert size == 4, size
    mode, root = sys.argv[1], Path(sys.argv[2])
    (write if mode == "write" else check)(root, rank)


if __name__ == "__main__":
    main(run)
