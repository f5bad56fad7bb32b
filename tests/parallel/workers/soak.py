"""Soak: many steps of a tiny model; memory stays flat, nothing leaks, the counters add up.

    soak.py STEPS [JSON]

K1=2, K2=4, groups of 2, 10 warmup steps. Every 500 steps each rank records its resident
memory, Horovod's process sets and its table of pending handles. At the end: local + global
averagings = floor((STEPS - warmup) / K1), no handle left, no process set added after the
optimizer's, and resident memory grew by less than 4 MiB from the first record after step
1000 to the end. Rank 0 writes the series to JSON when asked.
"""

import json
import os
import sys

import torch

import horovod.torch as hvd
import hvd_hier
from common import init, main, report
from hvd_hier.comm.horovod_api import process_set_table as _horovod_sets

K1, K2, S, W = 2, 4, 2, 10
EVERY = 500
LIMIT = 4 * 2**20


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def pending_handles():
    from horovod.torch import mpi_ops
    return len(mpi_ops._handle_map)


def test():
    rank, size = init()
    steps = int(sys.argv[1])
    torch.manual_seed(rank)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        named_parameters=model.named_parameters(), local_steps=K1, local_rounds=K2,
        group_size=S, warmup_steps=W)
    sets_before = dict(_horovod_sets())
    x = torch.randn(8, 16)
    series = []
    for t in range(1, steps + 1):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        if t % EVERY == 0:
            series.append({"step": t, "rss": rss_bytes(), "handles": pending_handles(),
                           "process_sets": len(_horovod_sets())})
    stats = opt.averaging_stats()
    assert stats["steps"] == steps and stats["sync_steps"] == W, stats
    assert stats["local_averages"] + stats["global_averages"] == (steps - W) // K1, stats
    assert stats["global_averages"] == (steps - W) // (K1 * K2), stats
    assert all(r["handles"] == 0 for r in series), series
    assert dict(_horovod_sets()) == sets_before, (_horovod_sets(), sets_before)
    settled = [r["rss"] for r in series if r["step"] >= 1000]
    growth = settled[-1] - settled[0]
    assert growth < LIMIT, f"resident memory grew by {growth / 2**20:.1f} MiB: {series}"
    everyone = hvd.allgather_object({"rank": rank, "series": series, "growth": growth})
    if rank == 0 and len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            json.dump({"steps": steps, "k1": K1, "k2": K2, "group_size": S, "warmup": W,
                       "stats": {k: v for k, v in stats.items() if k != "group"},
                       "ranks": everyone}, f, indent=1)
    report(f"soak {steps} steps")


if __name__ == "__main__":
    main(test)
