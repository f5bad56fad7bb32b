"""inf/NaN in one rank's parameters at an averaging: raised everywhere, or skipped, never spread.

4 ranks, groups {0, 1} and {2, 3}, K1=1, K2=2 (local averaging at odd steps, global at even
ones). Gradients are dyadic, so every average without rank 3 is checked exactly.
"""

import warnings

import numpy as np
import torch

import horovod.torch as hvd
import hvd_hier
from common import init, main, report

LR = 0.5


def make(rank, policy, flat_storage):
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0, 4.0]) * (rank + 1))
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD([w], lr=LR), named_parameters=[("w", w)], local_steps=1,
        local_rounds=2, group_size=2, nonfinite=policy, flat_storage=flat_storage)
    return w, opt


def step(w, opt, grad):
    opt.zero_grad()
    (w * torch.tensor(grad, dtype=torch.float32)).sum().backward()
    return opt.step()


def gather(w, name):
    return hvd.allgather(w.detach()[None], name=name).numpy()


def raise_policy(rank, flat_storage):
    w, opt = make(rank, "raise", flat_storage)
    step(w, opt, [1.0, 1.0, 1.0, 1.0])  # t=1: local averaging, all finite
    before = w.detach().clone()
    poison = [float("nan"), 1.0, 1.0, 1.0] if rank == 3 else [2.0, 2.0, 2.0, 2.0]
    message = ("hvd_hier: the parameters of rank 3 hold inf or NaN at step 2, before the "
               "global averaging of ranks [0, 1, 2, 3]; nothing was averaged, so the other "
               "ranks' parameters are intact (nonfinite='skip' would average the finite ranks "
               "instead)")
    try:
        step(w, opt, poison)
        raise AssertionError("no NonFiniteError")
    except hvd_hier.NonFiniteError as exc:
        assert str(exc) == message, str(exc)
    # the local update happened, the averaging did not; the schedule did not advance
    expected = before - LR * torch.tensor(poison)
    if rank != 3:
        assert torch.equal(w.detach(), expected), (w, expected)
    else:
        assert torch.isnan(w.detach()[0]) and torch.equal(w.detach()[1:], expected[1:])
    assert opt.averaging_stats()["steps"] == 1
    assert opt.averaging_stats()["global_averages"] == 0
    report(f"nonfinite raise flat={flat_storage}")


def skip_policy(rank, flat_storage):
    w, opt = make(rank, "skip", flat_storage)
    grads = [2.0, 2.0, 2.0, 2.0]
    step(w, opt, grads)  # t=1: local
    local = gather(w, f"nf.skip.{flat_storage}.1")
    # t=2: global; rank 3 has inf: the average of ranks 0, 1, 2 reaches every rank
    bad = [float("inf"), 0.0, 0.0, 0.0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step(w, opt, bad if rank == 3 else grads)
    texts = [str(c.message) for c in caught]
    assert ("hvd_hier: step 2, global averaging: the parameters of rank 3 hold inf or NaN; "
            "averaging the other 3 ranks (nonfinite='skip')") in texts, texts
    updated = local[:3] - LR * np.array(grads, dtype=np.float32)
    want = updated.sum(axis=0, dtype=np.float64) / 3
    got = gather(w, f"nf.skip.{flat_storage}.2")
    assert np.all(got == got[0]), got  # every rank, rank 3 included, holds the same values
    np.testing.assert_allclose(got[0], want, rtol=1e-6)
    stats = opt.averaging_stats()
    assert (stats["global_averages"], stats["skipped_contributions"]) == (1, 1), stats
    # t=3: local; both ranks of {2, 3} non-finite: they raise, {0, 1} average as usual
    nan = [float("nan")] * 4
    if rank in (2, 3):
        try:
            step(w, opt, nan)
            raise AssertionError("no NonFiniteError")
        except hvd_hier.NonFiniteError as exc:
            assert str(exc) == ("hvd_hier: the parameters of ranks 2, 3 hold inf or NaN at "
                                "step 3, before the local averaging of ranks [2, 3]; nothing "
                                "was averaged, so the other ranks' parameters are intact"), exc
    else:
        step(w, opt, grads)
        assert opt.averaging_stats()["local_averages"] == 2
        assert torch.isfinite(w).all()
    report(f"nonfinite skip flat={flat_storage}")


def test():
    rank, size = init()
    assert size == 4
    for flat_storage in (False, True):
        raise_policy(rank, flat_storage)
        skip_policy(rank, flat_storage)


if __name__ == "__main__":
    main(test)
