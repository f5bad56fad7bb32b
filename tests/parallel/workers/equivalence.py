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
from horovod.torch.compression import Compressor
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


def train(model, opt, rank, steps=STEPS, clip=None, scheduler=None):
    """clip=None: no clipping; "synchronize": Horovod's clipping pattern (synchronize, clip,
    step inside skip_synchronize); "local": clip the local gradients and step."""
    history = []
    for t in range(1, steps + 1):
        x, y = batch(rank, t)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if clip == "synchronize":
            opt.synchronize()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        if clip == "synchronize":
            with opt.skip_synchronize():
                opt.step()
        else:
            opt.step()
        if scheduler is not None:
            scheduler.step()
        history.append([p.detach().clone() for p in model.parameters()])
    return history


def max_difference(a, b):
    return max((x - y).abs().max().item() for pa, pb in zip(a, b) for x, y in zip(pa, pb))


def assert_close(a, b, what, rtol=1e-5, atol=1e-6):
    for t, (pa, pb) in enumerate(zip(a, b), start=1):
        for i, (x, y) in enumerate(zip(pa, pb)):
            assert torch.allclose(x, y, rtol=rtol, atol=atol), (
                f"{what}: step {t}, parameter {i}: max difference {(x - y).abs().max().item():.3g}")


def horovod_run(rank, clip=None):
    model = make_model()
    opt = hvd.DistributedOptimizer(sgd(model), named_parameters=model.named_parameters())
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    return train(model, opt, rank, clip=clip, scheduler=sched)


def hier_run(rank, clip=None, **kwargs):
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


class Coarse(Compressor):
    """A lossy compression with a large, order-independent effect: gradients rounded to
    multiples of 1/64, so sums are exact in any order."""

    @staticmethod
    def compress(tensor):
        return torch.round(tensor * 64) / 64, None

    @staticmethod
    def decompress(tensor, ctx):
        return tensor


def horovod_arguments_in_warmup(rank):
    """Horovod's own arguments govern the warmup exactly as in hvd.DistributedOptimizer."""
    variants = {
        "compression=fp16": dict(compression=hvd.Compression.fp16),
        "compression=Coarse": dict(compression=Coarse),
        "op=Sum": dict(op=hvd.Sum),
        "gradient_predivide_factor=2": dict(gradient_predivide_factor=2.0),
        "groups=2": dict(groups=2),
        "num_groups=2": dict(num_groups=2),
        "backward_passes_per_step=2": dict(backward_passes_per_step=2),
    }
    changes_result = {"compression=Coarse", "op=Sum"}  # clearly visible effects
    plain = None
    for label, kwargs in [("plain", {})] + list(variants.items()):
        histories = []
        for wrap in (hvd.DistributedOptimizer, "hier"):
            model = make_model()
            opt = sgd(model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if wrap == "hier":
                    opt = hvd_hier.DistributedOptimizer(
                        opt, named_parameters=model.named_parameters(), warmup_steps=STEPS, **kwargs)
                else:
                    opt = wrap(opt, named_parameters=model.named_parameters(), **kwargs)
            passes = kwargs.get("backward_passes_per_step", 1)
            history = []
            for t in range(1, STEPS + 1):
                opt.zero_grad()
                for k in range(passes):
                    x, y = batch(rank, t * 10 + k)
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                history.append([p.detach().clone() for p in model.parameters()])
            histories.append(history)
        # Step 1 reduces in synchronize() rather than in the hooks, which may fuse tensors
        # differently: equal up to rounding (float16 rounding with fp16 compression).
        atol = 1e-4 if label == "compression=fp16" else 1e-5
        assert_close(histories[1], histories[0], f"warmup with {label}", rtol=1e-5, atol=atol)
        if label == "plain":
            plain = histories[0]
        elif label in changes_result:
            # The argument changes the result, and hvd_hier follows it: its run is far closer
            # to Horovod's run with the argument than to Horovod's run without it.
            same, without = max_difference(histories[1], histories[0]), max_difference(histories[1], plain)
            assert 10 * same < without, (label, same, without)
    # sparse_as_dense: an embedding's sparse gradient is reduced densely in warmup.
    histories = []
    for wrap in (hvd.DistributedOptimizer, "hier"):
        torch.manual_seed(7)
        emb = torch.nn.Embedding(12, 4, sparse=True)
        hvd.broadcast_parameters(emb.state_dict(), root_rank=0)
        opt = torch.optim.SGD(emb.parameters(), lr=0.1)
        if wrap == "hier":
            opt = hvd_hier.DistributedOptimizer(opt, named_parameters=emb.named_parameters(),
                                                warmup_steps=STEPS, sparse_as_dense=True)
        else:
            opt = wrap(opt, named_parameters=emb.named_parameters(), sparse_as_dense=True)
        history = []
        for t in range(1, STEPS + 1):
            opt.zero_grad()
            emb(torch.tensor([(rank + t) % 12, (3 * rank) % 12])).pow(2).sum().backward()
            opt.step()
            history.append([emb.weight.detach().clone()])
        histories.append(history)
    assert_close(histories[1], histories[0], "warmup with sparse_as_dense", rtol=0, atol=0)


def run():
    rank, size = init()

    horovod_arguments_in_warmup(rank)
    report("Horovod's arguments work in warmup")

    reference = horovod_run(rank)
    got, _ = hier_run(rank, local_steps=1, local_rounds=1, group_size=2)
    assert_close(got, reference, "K1=K2=1 vs hvd.DistributedOptimizer")
    got, opt = hier_run(rank, local_steps=1, local_rounds=1, group_size=2, warmup_steps=5)
    assert_close(got, reference, "K1=K2=1, warmup 5 vs hvd.DistributedOptimizer")
    assert opt.averaging_stats()["sync_steps"] == 5
    report("K1=K2=1 is synchronous SGD")

    reference = horovod_run(rank, clip="synchronize")
    got, _ = hier_run(rank, clip="synchronize", local_steps=1, local_rounds=1, warmup_steps=STEPS)
    assert_close(got, reference, "warmup with synchronize/skip_synchronize and clipping")
    report("synchronize and skip_synchronize in warmup")

    # After warmup, synchronize() does nothing: clipping the local gradients by hand gives
    # the same as the hvd_hier run with clip=True.
    got, _ = hier_run(rank, clip="synchronize", local_steps=2, local_rounds=2, group_size=2)
    expected, _ = hier_run(rank, clip="local", local_steps=2, local_rounds=2, group_size=2)
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
