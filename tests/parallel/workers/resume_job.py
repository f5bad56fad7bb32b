"""Exact resume across a restart of the job, from any step, with save/load_checkpoint.

    resume_job.py full DIR     train 24 steps; checkpoints after steps 2 (warmup), 7 (u=4:
                               just averaged locally, mid K2 cycle) and 11 (u=8: mid K1 and
                               mid K2 cycle); the final parameters
    resume_job.py resume DIR   a new job: for each checkpoint, a fresh model (other initial
                               values) loads it and trains to step 24; its parameters equal
                               the full run's bit for bit (from a warmup step: to Horovod's
                               allreduce rounding, see below). Then the loader's errors.

The training loop draws from every generator a checkpoint must restore: dropout (torch),
input noise (NumPy), a shuffled batch order (Python's random), and the data position (a
per-rank torch.Generator whose state is saved as an extra).
"""

import random
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

import horovod.torch as hvd
import hvd_hier
from common import expect_error, init, main, report

K1, K2, S, W, STEPS = 2, 3, 2, 3, 24
SAVE_AT = (2, 7, 11)


def make(rank, init_seed):
    torch.manual_seed(init_seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Dropout(0.25),
                                torch.nn.Linear(8, 2))
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        named_parameters=model.named_parameters(), local_steps=K1, local_rounds=K2,
        group_size=S, warmup_steps=W, deterministic=True)
    return model, opt


def train_step(model, opt, data):
    x = torch.randn(4, 6, generator=data) + torch.from_numpy(np.random.normal(size=(4, 6))).float()
    order = list(range(4))
    random.shuffle(order)
    opt.zero_grad()
    model(x[order]).pow(2).mean().backward()
    opt.step()


def final_params(model):
    return [p.detach().clone() for p in model.parameters()]


def full(rank, folder):
    model, opt = make(rank, init_seed=0)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    np.random.seed(100 + rank)
    random.seed(200 + rank)
    torch.manual_seed(300 + rank)
    data = torch.Generator().manual_seed(400 + rank)
    for t in range(1, STEPS + 1):
        train_step(model, opt, data)
        if t in SAVE_AT:
            hvd_hier.save_checkpoint(folder / f"ckpt{t}", model, opt, step=t,
                                     data=data.get_state())
    torch.save({"params": final_params(model), "stats": opt.averaging_stats()},
               folder / f"full_rank{rank}.pt")
    report("full run")


def resume(rank, folder):
    want = torch.load(folder / f"full_rank{rank}.pt", weights_only=False)
    for t0 in SAVE_AT:
        model, opt = make(rank, init_seed=1000 + t0)  # not the saved values until loaded
        extra = hvd_hier.load_checkpoint(folder / f"ckpt{t0}", model, opt)
        assert extra["step"] == t0 and opt.averaging_stats()["steps"] == t0, extra
        data = torch.Generator()
        data.set_state(extra["data"])
        for t in range(t0 + 1, STEPS + 1):
            train_step(model, opt, data)
        got = final_params(model)
        for i, (a, b) in enumerate(zip(got, want["params"])):
            assert torch.equal(a, b), (
                f"resumed after step {t0}: parameter {i} differs by {(a - b).abs().max()}")
        stats = opt.averaging_stats()
        for key in ("steps", "sync_steps", "local_averages", "global_averages"):
            assert stats[key] == want["stats"][key], (key, stats, want["stats"])
        report(f"exact resume after step {t0}")

    # the loader's errors, the same on every rank, with nothing restored and nothing hung
    model, opt = make(rank, init_seed=5)
    broken = folder / "missing_rank2"
    mixed = folder / "mixed"
    if rank == 0:
        shutil.copytree(folder / "ckpt7", broken)
        (broken / "rank2.pt").unlink()
        shutil.copytree(folder / "ckpt7", mixed)
        shutil.copy(folder / "ckpt11" / "rank1.pt", mixed / "rank1.pt")
    hvd.barrier()
    expect_error(hvd_hier.CheckpointError,
                 f"hvd_hier.load_checkpoint: rank 2: {broken / 'rank2.pt'} does not exist",
                 hvd_hier.load_checkpoint, broken, model, opt)
    expect_error(hvd_hier.CheckpointError,
                 f"hvd_hier.load_checkpoint: {mixed} mixes steps: rank 0 at step 7, rank 1 at "
                 "step 11, rank 2 at step 7, rank 3 at step 7",
                 hvd_hier.load_checkpoint, mixed, model, opt)
    assert opt.averaging_stats()["steps"] == 0  # nothing was restored
    report("checkpoint errors")


def test():
    rank, size = init()
    assert size == 4
    mode, folder = sys.argv[1], Path(sys.argv[2])
    {"full": full, "resume": resume}[mode](rank, folder)


if __name__ == "__main__":
    main(test)
