"""A rank that stops calling step() is reported within stall_timeout_s, not a silent hang.

4 ranks, groups {0, 1} and {2, 3}, K1=1, K2=2. Rank 3 takes steps 1 and 2, then stops for
12 s. At step 3 its partner, rank 2, waits for the local averaging and gets StallError after
3 s; ranks 0 and 1 average locally at step 3 and get StallError at the global averaging of
step 4. When rank 3 comes back, its step 3 finds rank 2 gone and gets StallError too. The
ranks then meet through files (their abandoned collectives stay pending in Horovod) and
leave.
"""

import os
import sys
import time
import traceback
from pathlib import Path

import torch

import horovod.torch as hvd
import hvd_hier
from hvd_hier.reduce import pieces
from hvd_hier.topology.process_sets import process_set_for
from common import init, report

TIMEOUT = 3.0


def step(w, opt):
    opt.zero_grad()
    (w * w).sum().backward()
    opt.step()


def test():
    rank, size = init()
    assert size == 4
    w = torch.nn.Parameter(torch.full((5,), float(rank)))
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD([w], lr=0.125), named_parameters=[("w", w)], local_steps=1,
        local_rounds=2, group_size=2, stall_timeout_s=TIMEOUT)
    step(w, opt)
    step(w, opt)
    if rank == 3:
        time.sleep(6 * TIMEOUT)  # "stops calling step()", longer than the others may wait
    start = time.monotonic()
    stalled_at = 3 if rank in (2, 3) else 4
    if rank < 2:
        step(w, opt)  # step 3: {0, 1} average locally as usual
    try:
        step(w, opt)
        raise AssertionError("no StallError")
    except hvd_hier.StallError as exc:
        waited = time.monotonic() - start
        kind, members = ("local", [2, 3]) if rank in (2, 3) else ("global", [0, 1, 2, 3])
        assert str(exc) == (
            f"hvd_hier: the {kind} averaging at step {stalled_at} waited 3 s for ranks "
            f"{members} and did not complete: a rank stopped calling step(), or the ranks' "
            "schedules or parameters differ (Horovod's stall warnings name the ranks that did "
            "not join). Pass a larger stall_timeout_s if a rank is legitimately busy that "
            "long"), str(exc)
        assert TIMEOUT <= waited < 4 * TIMEOUT, waited  # slack, yet before the sleeper wakes
    assert opt.averaging_stats()["steps"] == stalled_at - 1
    report("stall: reported")


def overlapped(folder: Path) -> None:
    """Then with a reduction in flight: K-AVG on the first two ranks (a process set of its
    own), K = 4, overlap_steps=2, parameters of three pieces. Rank 1 takes steps 1 to 4 (the
    global reduction starts at 4 with its first piece), then stops for 12 s. Rank 0 submits
    the other pieces at the end of step 5 and at step 6, where the reduction is due, gets
    StallError after 3 s naming the overlapped reduction. Rank 1, back, finds rank 0's
    pieces still pending in Horovod and finishes without an error."""
    rank = hvd.rank()
    ps = process_set_for([0, 1])  # the first part's local group: it exists already
    if rank > 1:
        return
    n = 3 * (pieces.CHUNK_BYTES // 4) - 5  # three pieces of float32
    w = torch.nn.Parameter(torch.full((n,), float(rank)))
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD([w], lr=0.125), named_parameters=[("w", w)], local_steps=1,
        local_rounds=4, group_size=1, overlap_steps=2, stall_timeout_s=TIMEOUT, process_set=ps)
    for _ in range(4):
        step(w, opt)
    if rank == 1:
        time.sleep(6 * TIMEOUT)
    step(w, opt)
    start = time.monotonic()
    try:
        step(w, opt)
        assert rank == 1, "no StallError"
    except hvd_hier.StallError as exc:
        assert rank == 0, exc
        waited = time.monotonic() - start
        assert str(exc) == (
            "hvd_hier: the global averaging started at step 4 (overlapped, due at step 6) "
            "waited 3 s for ranks [0, 1] and did not complete: a rank stopped calling step(), "
            "or the ranks' schedules or parameters differ (Horovod's stall warnings name the "
            "ranks that did not join). Pass a larger stall_timeout_s if a rank is legitimately "
            "busy that long"), str(exc)
        assert TIMEOUT <= waited < 4 * TIMEOUT, waited  # slack, yet before the sleeper wakes
    report("stall: overlapped")


def leave_together(folder: Path, rank: int, size: int) -> None:
    """Wait for every rank without a Horovod collective (abandoned ones are still pending)."""
    (folder / f"done{rank}").touch()
    deadline = time.monotonic() + 60
    while len(list(folder.glob("done*"))) < size:
        if time.monotonic() > deadline:
            raise AssertionError("the other ranks did not finish")
        time.sleep(0.05)


if __name__ == "__main__":
    try:
        test()
        overlapped(Path(sys.argv[1]))
        leave_together(Path(sys.argv[1]), hvd.rank(), hvd.size())
        hvd.shutdown()  # negotiated: every background loop stops before anyone exits
        code = 0
    except BaseException:
        print(f"FAIL on rank {hvd.rank()}:\n{traceback.format_exc()}", file=sys.stderr,
              flush=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
