"""Parameters at every step equal the independent reference, for many (K1, K2, S, warmup).

Values are small dyadic rationals and groups have 1, 2 or 4 ranks, so every average is exact
in float32 and float64 and the comparison is exact equality.
"""

import numpy as np
import torch

import horovod.torch as hvd
import hvd_hier
from common import expect_warning, init, main, report
from reference import simulate_sgd

CONFIGS = [
    # (K1, K2, S, warmup)
    (1, 1, 4, 0),  # synchronous SGD by averaging
    (2, 2, 2, 0),
    (2, 3, 2, 3),
    (3, 2, 1, 0),  # S=1: K-AVG with K=6
    (2, 2, 4, 0),  # S=P: K-AVG with K=2
    (1, 4, 2, 2),
    (4, 1, 2, 1),  # K2=1: every averaging is global
    (2, 2, "local", 1),
]
# the same with persistent flat storage: parameters are views into the reduced buffers
FLAT_CONFIGS = [(2, 2, 2, 0), (2, 3, 2, 3), (3, 2, 1, 0), (1, 4, 2, 2)]
# deterministic=True: warmup gradients through hvd_hier's buckets, one bucket in flight
DETERMINISTIC_CONFIGS = [(2, 3, 2, 3), (1, 4, 2, 2), (2, 2, "local", 1)]
SIZES = {"a": (3, 5), "b": (37,), "c": (2, 2)}  # 'c' is float64
LR = 0.25


def init_values(rank):
    return {name: (rank + 1) + 0.25 * np.arange(int(np.prod(shape))).reshape(shape) % 4
            for name, shape in SIZES.items()}


def grad_values(rank, t):
    return {name: (rank + 1) * (t % 3 + 1) + 0.5 * (np.arange(int(np.prod(shape))) % 4).reshape(shape)
            for name, shape in SIZES.items()}


class Model(torch.nn.Module):
    def __init__(self, rank):
        super().__init__()
        values = init_values(rank)
        self.a = torch.nn.Parameter(torch.tensor(values["a"], dtype=torch.float32))
        self.b = torch.nn.Parameter(torch.tensor(values["b"], dtype=torch.float32))
        self.c = torch.nn.Parameter(torch.tensor(values["c"], dtype=torch.float64))

    def loss(self, rank, t):
        g = grad_values(rank, t)
        return ((self.a * torch.tensor(g["a"], dtype=torch.float32)).sum()
                + (self.b * torch.tensor(g["b"], dtype=torch.float32)).sum()
                + (self.c * torch.tensor(g["c"], dtype=torch.float64)).sum())


def flat(values):
    return np.concatenate([np.asarray(values[n], dtype=np.float64).ravel() for n in SIZES])


def run_config(rank, size, k1, k2, s, warmup, flat_storage=False, deterministic=False):
    model = Model(rank)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    params = (model.a, model.b, model.c)
    kwargs = dict(named_parameters=model.named_parameters(), local_steps=k1, local_rounds=k2,
                  group_size=s, warmup_steps=warmup, flat_storage=flat_storage,
                  deterministic=deterministic,
                  bucket_cap_mb=64 / 2**20)  # 64-byte buckets: tensors split across buckets
    if k1 == 1 and k2 == 1 and warmup == 0:
        opt = expect_warning("that is synchronous SGD", hvd_hier.DistributedOptimizer, opt, **kwargs)
    else:
        opt = hvd_hier.DistributedOptimizer(opt, **kwargs)
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    assert opt.averaging_stats()["steps"] == 0
    storages = {p.untyped_storage().data_ptr() for p in params}
    if flat_storage:  # 64-byte cap: 'a' (60 bytes), 'b' (148, alone) and 'c' (float64) own a buffer each
        assert [b.storage.numel() for b in opt.hier_state().averager.buckets] == [15, 37, 4]
        assert storages == {b.storage.untyped_storage().data_ptr()
                            for b in opt.hier_state().averager.buckets}

    group_len = size if s == "local" else s  # horovodrun -H localhost:4: one host
    groups = [list(range(i, i + group_len)) for i in range(0, size, group_len)]
    assert opt.averaging_stats()["group"] == next(g for g in groups if rank in g)
    steps = warmup + 2 * k1 * k2 + 1
    expected = simulate_sgd([flat(init_values(r)) for r in range(size)], lambda r, t: flat(grad_values(r, t)),
                            LR, groups, k1, k2, warmup, steps)
    schedule = hvd_hier.HierSchedule(k1, k2, warmup)
    for t in range(1, steps + 1):
        opt.zero_grad()
        model.loss(rank, t).backward()
        opt.step()
        got = np.concatenate([p.detach().double().numpy().ravel() for p in params])
        want = expected[t - 1][rank]
        assert np.array_equal(got, want), (
            f"K1={k1} K2={k2} S={s} W={warmup}: step {t} ({schedule.reduction_at(t).value}) "
            f"rank {rank}\n got  {got}\n want {want}")
        stats = opt.averaging_stats()
        counts = schedule.counts_through(t)
        assert (stats["steps"], stats["sync_steps"], stats["local_averages"], stats["global_averages"]) == (
            t, counts["sync"], counts["local"], counts["global"]), (t, stats, counts)
        nbytes = 15 * 4 + 37 * 4 + 4 * 8
        assert stats["bytes_global"] == counts["global"] * nbytes, stats
        assert stats["bytes_local"] == (counts["local"] * nbytes if group_len > 1 else 0), stats
    # flat storage: still views into the same buffers; otherwise never moved
    assert {p.untyped_storage().data_ptr() for p in params} == storages
    report(f"schedule K1={k1} K2={k2} S={s} W={warmup}" + (" flat" if flat_storage else "")
           + (" deterministic" if deterministic else ""))


def buffers_and_optimizer_state(rank):
    """Floating-point buffers are averaged at the same steps as the parameters; integer
    buffers and the optimizer's state stay local."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.fill_(float(rank))
        bn.running_var.fill_(float(rank + 1))
        bn.num_batches_tracked.fill_(10 * rank)
    model.eval()  # the forward pass leaves the statistics alone: only averaging moves them
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9),
        named_parameters=model.named_parameters(), local_steps=1, local_rounds=2, group_size=2,
        buffers=model.buffers())

    def step():
        opt.zero_grad()
        model(torch.full((2, 3), float(rank + 1))).sum().backward()
        opt.step()

    step()  # u=1: local averaging within {0, 1} and {2, 3}
    pair_mean = 0.5 if rank < 2 else 2.5
    assert torch.equal(bn.running_mean, torch.full((3,), pair_mean)), bn.running_mean
    assert torch.equal(bn.running_var, torch.full((3,), pair_mean + 1)), bn.running_var
    step()  # u=2: global averaging
    assert torch.equal(bn.running_mean, torch.full((3,), 1.5)), bn.running_mean
    assert torch.equal(bn.running_var, torch.full((3,), 2.5)), bn.running_var
    assert bn.num_batches_tracked.item() == 10 * rank
    # momentum buffers hold each rank's own gradients: they were not averaged
    momentum = opt.state[model[0].bias]["momentum_buffer"]
    all_momenta = hvd.allgather(momentum[None], name="test.momentum")
    assert len({tuple(m.tolist()) for m in all_momenta}) == 4, all_momenta
    report("buffers averaged, integer buffers and optimizer state local")


def run():
    rank, size = init()
    assert size == 4
    for config in CONFIGS:
        run_config(rank, size, *config)
    for config in FLAT_CONFIGS:
        run_config(rank, size, *config, flat_storage=True)
    for config in DETERMINISTIC_CONFIGS:
        run_config(rank, size, *config, deterministic=True)
    run_config(rank, size, 2, 3, 2, 3, flat_storage=True, deterministic=True)
    buffers_and_optimizer_state(rank)


if __name__ == "__main__":
    main(run)
