"""The special cases against references that share no code with hvd_hier:

* K1 = K2 = 1 (with and without warmup) is hvd.DistributedOptimizer (SGD + momentum + weight
  decay, an LR scheduler, broadcast_optimizer_state before training);
* S = 1 is K-AVG with K = K1*K2 and S = P is K-AVG with K = K1 (a hand-written local SGD
  that averages with hvd.allreduce);
* synchronize() + skip_synchronize() with gradient clipping match Horovod in warmup and are
  harmless after it.
"""

import warnings

import torch

import horovod.torch as hvd
import hvd_hier
from common import init, main, report

STEPS = 12


def make_model():
    torch.manual_seed(1234)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    return model


def batch(rank, t):
    g = torch.Generator().manual_seed(1000 * rank + t)
    return torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)


def train(model, opt, rank, steps=STEPS, clip=False, scheduler=None):
    history = []
    for t in range(1, steps + 1):
        x, y = batch(rank, t)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if clip:
            opt.synchronize()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            with opt.skip_synchronize():
                opt.step()
        else:
            opt.step()
        if scheduler is not None:
            scheduler.step()
        history.append([p.detach().clone() for p in model.parameters()])
    return history


def assert_close(a, b, what, rtol=1e-5, atol=1e-6):
    for t, (pa, pb) in enumerate(zip(a, b), start=1):
        for i, (x, y) in enumerate(zip(pa, pb)):
            assert torch.allclose(x, y, rtol=rtol, atol=atol), (
                f"{what}: step {t}, parameter {i}: max difference {(x - y).abs().max().item():.3g}")


def horovod_run(rank, clip=False):
    model = make_model()
    opt = hvd.DistributedOptimizer(sgd(model), named_parameters=model.named_parameters())
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    return train(model, opt, rank, clip=clip, scheduler=sched)


def hier_run(rank, clip=False, **kwargs):
    model = make_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = hvd_hier.DistributedOptimizer(sgd(model), named_parameters=model.named_parameters(),
                                            **kwargs)
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    assert opt.averaging_stats()["steps"] == 0
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    history = train(model, opt, rank, clip=clip, scheduler=sched)
    assert opt.param_groups[0]["lr"] == 0.05 * 0.5 ** (STEPS // 4)
    return history, opt


def kavg_reference(rank, k):
    """Local SGD written out by hand: torch's SGD, then hvd.allreduce every k steps."""
    model = make_model()
    opt = sgd(model)
    hvd.broadcast_optimizer_state(opt, root_rank=0)  # the same state-creating step as above
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    history = []
    for t in range(1, STEPS + 1):
        x, y = batch(rank, t)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
        if t % k == 0:
            with torch.no_grad():
                for i, p in enumerate(model.parameters()):
                    p.copy_(hvd.allreduce(p, op=hvd.Average, name=f"ref.{i}"))
        history.append([p.detach().clone() for p in model.parameters()])
    return history


def run():
    rank, size = init()

    reference = horovod_run(rank)
    got, _ = hier_run(rank, local_steps=1, local_rounds=1, group_size=2)
    assert_close(got, reference, "K1=K2=1 vs hvd.DistributedOptimizer")
    got, opt = hier_run(rank, local_steps=1, local_rounds=1, group_size=2, warmup_steps=5)
    assert_close(got, reference, "K1=K2=1, warmup 5 vs hvd.DistributedOptimizer")
    assert opt.averaging_stats()["sync_steps"] == 5
    report("K1=K2=1 is synchronous SGD")

    reference = horovod_run(rank, clip=True)
    got, _ = hier_run(rank, clip=True, local_steps=1, local_rounds=1, warmup_steps=STEPS)
    assert_close(got, reference, "warmup with synchronize/skip_synchronize and clipping")
    report("synchronize and skip_synchronize in warmup")

    # After warmup, synchronize() does nothing: clipping the local gradients by hand gives
    # the same as the hvd_hier run with clip=True.
    got, _ = hier_run(rank, clip=True, local_steps=2, local_rounds=2, group_size=2)
    model = make_model()
    opt = hvd_hier.DistributedOptimizer(sgd(model), named_parameters=model.named_parameters(),
                                        local_steps=2, local_rounds=2, group_size=2)
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    expected = []
    for t in range(1, STEPS + 1):
        x, y = batch(rank, t)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        sched.step()
        expected.append([p.detach().clone() for p in model.parameters()])
    assert_close(got, expected, "synchronize after warmup", rtol=0, atol=0)
    report("synchronize is harmless after warmup")

    got, _ = hier_run(rank, local_steps=2, local_rounds=3, group_size=1)
    assert_close(got, kavg_reference(rank, 6), "S=1 vs K-AVG with K=K1*K2")
    report("S=1 is K-AVG with K=K1*K2")

    got, _ = hier_run(rank, local_steps=3, local_rounds=2, group_size=size)
    assert_close(got, kavg_reference(rank, 3), "S=P vs K-AVG with K=K1")
    report("S=P is K-AVG with K=K1")


if __name__ == "__main__":
    main(run)
