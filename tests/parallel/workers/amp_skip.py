"""torch.amp.GradScaler with hvd_hier: an overflow skips the update, never the schedule.

Rank 2 overflows in the warmup (synchronous) step 1: its gradient reaches every rank through
the allreduce, so every rank skips. Rank 1 alone overflows in the local step 5: only rank 1
skips, every rank still takes part in the averagings of steps 6 and 9 (no hang), and the
parameters equal, bit for bit, the reference in which those updates are left out. Scales
and gradients are powers of two and dyadic values, so unscaling is exact.
"""

import numpy as np
import torch

import horovod.torch as hvd
import hvd_hier
from common import init, main, report
from reference import simulate_sgd

K1, K2, S, WARMUP, STEPS, LR = 2, 2, 2, 1, 9, 0.25
OVERFLOW = {(2, 1), (1, 5)}  # (rank, step)
HUGE = 2.0 ** 127            # times the scale (16) overflows float32


def init_values(rank):
    return (rank + 1) + 0.25 * (np.arange(8) % 4)


def grad_values(rank, t):
    return (rank + 1) * (t % 3 + 1) + 0.5 * (np.arange(8) % 4)


def run(rank, size, explicit_unscale):
    w = torch.nn.Parameter(torch.tensor(init_values(rank), dtype=torch.float32))
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD([w], lr=LR), named_parameters=[("w", w)], local_steps=K1,
        local_rounds=K2, group_size=S, warmup_steps=WARMUP)
    scaler = torch.amp.GradScaler("cpu", init_scale=16.0, growth_interval=1000)
    skipped = {t for r, t in OVERFLOW if r == rank} | {t for _, t in OVERFLOW if t <= WARMUP}
    # the reference: a skipped update is a zero gradient (plain SGD); in the warmup step the
    # overflow reaches every rank
    zero = {(r, t) for r in range(size) for _, t in OVERFLOW if t <= WARMUP} | OVERFLOW
    groups = [list(range(i, i + S)) for i in range(0, size, S)]
    expected = simulate_sgd([init_values(r) for r in range(size)],
                            lambda r, t: 0 * grad_values(r, t) if (r, t) in zero
                            else grad_values(r, t), LR, groups, K1, K2, WARMUP, STEPS)
    for t in range(1, STEPS + 1):
        c = torch.tensor(grad_values(rank, t), dtype=torch.float32)
        if (rank, t) in OVERFLOW:
            c = torch.full_like(c, HUGE)
        opt.zero_grad()
        scaler.scale((w * c).sum()).backward()
        opt.synchronize()  # the recommended loop: a no-op after warmup
        if explicit_unscale:
            scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        got = w.detach().double().numpy()
        assert np.array_equal(got, expected[t - 1][rank]), (
            f"step {t} rank {rank}: got {got}, want {expected[t - 1][rank]}")
        stats = opt.averaging_stats()
        assert stats["steps"] == t, stats
        assert stats["skipped_steps"] == len({s for s in skipped if s <= t}), (t, stats)
    # every rank took part in every averaging
    assert (stats["local_averages"], stats["global_averages"]) == (2, 2), stats
    # each scaler backed off once per overflow it saw: rank 1 twice, the others once
    assert scaler.get_scale() == (4.0 if rank == 1 else 8.0), scaler.get_scale()
    everyone = hvd.allgather(w.detach()[None], name=f"amp.final.{explicit_unscale}")
    assert all(torch.equal(everyone[0], x) for x in everyone), everyone  # step 9: global
    report(f"amp skip explicit_unscale={explicit_unscale}")


def test():
    rank, size = init()
    assert size == 4
    run(rank, size, explicit_unscale=False)
    run(rank, size, explicit_unscale=True)


if __name__ == "__main__":
    main(test)
