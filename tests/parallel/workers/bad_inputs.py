"""Every bad input raises a clear error on every rank, before any collective; afterwards the
ranks are still in step (a valid optimizer trains and averages)."""

import torch

import horovod.torch as hvd
import hvd_hier
from common import expect_error, init, main, report

DO = hvd_hier.DistributedOptimizer


class Net(torch.nn.Module):
    def __init__(self, out=2):
        super().__init__()
        self.fc = torch.nn.Linear(4, out)


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


def run():
    rank, size = init()
    m = Net()
    np_ = m.named_parameters

    cases = [
        (dict(local_steps=0), "local_steps must be an integer >= 1, got 0"),
        (dict(local_steps=2.5), "local_steps must be an integer >= 1, got 2.5 (float)"),
        (dict(local_steps=True), "local_steps must be an integer >= 1, got True (bool)"),
        (dict(local_rounds="3"), "local_rounds must be an integer >= 1, got '3' (str)"),
        (dict(local_rounds=-2), "local_rounds must be an integer >= 1, got -2"),
        (dict(warmup_steps=-1), "warmup_steps must be an integer >= 0, got -1"),
        (dict(group_size=0), "group_size must be an integer >= 1 or 'local', got 0"),
        (dict(group_size="node"), "group_size must be an integer >= 1 or 'local', got 'node'"),
        (dict(group_size=2.0), "group_size must be an integer >= 1 or 'local', got 2.0"),
        (dict(group_size=8), "group_size=8 is larger than process_set, which has 4 ranks"),
        (dict(group_size=3), "group_size=3 does not divide the 4 ranks of process_set; "
                             "pick a divisor of 4 or group_size='local'"),
        (dict(op=hvd.Adasum), "op=hvd.Adasum is not supported by hvd_hier.DistributedOptimizer "
                              "(Adasum combines gradients, Hier-AVG averages models); use "
                              "op=hvd.Average or hvd.Sum"),
        (dict(backward_passes_per_step=0), "backward_passes_per_step must be an integer >= 1, got 0"),
        (dict(gradient_predivide_factor=0.0), "gradient_predivide_factor must be a number > 0, got 0.0"),
        (dict(gradient_predivide_factor=2.0, op=hvd.Sum),
         "gradient_predivide_factor=2.0 needs op=hvd.Average"),
        (dict(bucket_cap_mb=0), "bucket_cap_mb must be a number > 0, got 0"),
        (dict(bucket_cap_mb=float("nan")), "bucket_cap_mb must be a number > 0, got nan"),
        (dict(flat_storage="yes"), "flat_storage must be True or False, got 'yes'"),
        (dict(nonfinite="maybe"), "nonfinite must be 'raise' or 'skip', got 'maybe'"),
        (dict(stall_timeout_s=0), "stall_timeout_s must be a number > 0 or None, got 0"),
        (dict(stall_timeout_s="1"), "stall_timeout_s must be a number > 0 or None, got '1'"),
        (dict(deterministic=1), "deterministic must be True or False, got 1"),
        (dict(deterministic=True, compression=hvd.Compression.fp16),
         "deterministic=True reduces warmup gradients without compression, got "
         "compression=FP16Compressor; pass compression=hvd.Compression.none"),
    ]
    for kwargs, message in cases:
        expect_error(ValueError, message, DO, sgd(m), named_parameters=np_(), **kwargs)
    report("argument errors")

    expect_error(TypeError, "hvd_hier.DistributedOptimizer: optimizer must be a "
                 "torch.optim.Optimizer, got Net", DO, m)
    unadded = hvd.ProcessSet([0, 1])
    expect_error(ValueError, f"process_set must be an initialised Horovod process set, got {unadded}",
                 DO, sgd(m), process_set=unadded)
    report("type errors")

    # Tensors the averaging cannot take.
    ints = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(3, dtype=torch.int64),
                                                      requires_grad=False)])
    expect_error(ValueError, "hvd_hier.DistributedOptimizer: param_groups[0]['params'][0] has "
                 "dtype torch.int64; averaging supports float32, float64, float16 and bfloat16",
                 DO, torch.optim.SGD(ints.parameters(), lr=0.1))
    gappy = torch.nn.Parameter(torch.zeros(4, 4)[:, ::2])
    expect_error(ValueError, "hvd_hier.DistributedOptimizer: 'w': a tensor of shape (4, 2) and "
                 "strides (4, 2) is neither contiguous nor dense; hvd_hier averages dense "
                 "tensors only", DO, torch.optim.SGD([gappy], lr=0.1), named_parameters=[("w", gappy)])
    on_meta = torch.nn.Parameter(torch.zeros(2, device="meta"))
    expect_error(ValueError, "hvd_hier.DistributedOptimizer: parameters and buffers must be on one "
                 "device, got 'fc.weight' on cpu, 'x' on meta", DO,
                 torch.optim.SGD(list(m.parameters()) + [on_meta], lr=0.1),
                 named_parameters=list(np_()) + [("x", on_meta)])
    tied = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 4), "head": torch.nn.Linear(4, 5)})
    tied["head"].weight = tied["emb"].weight
    buffers = [tied["emb"].weight.detach()]  # a buffer aliasing a parameter
    expect_error(ValueError, "hvd_hier.DistributedOptimizer: flat_storage=True: 'emb.weight' and "
                 "buffer 0 share memory (tied weights); flat storage would untie them, so pass "
                 "flat_storage=False", DO, sgd(tied), named_parameters=tied.named_parameters(),
                 buffers=buffers, flat_storage=True)
    report("tensor errors")

    # Rank outside the process set: ranks 2 and 3 are refused; 0 and 1 train on the set.
    pair = hvd.add_process_set([0, 1])
    if rank in (0, 1):
        opt = DO(sgd(m), named_parameters=np_(), process_set=pair, group_size=1,
                 local_steps=1, local_rounds=1, warmup_steps=1)
        assert opt.averaging_stats()["group"] == [rank]
    else:
        expect_error(ValueError, f"process_set [0, 1] does not include this rank ({rank}); create "
                     "the optimizer only on the ranks of process_set", DO, sgd(m),
                     named_parameters=np_(), process_set=pair)
    report("process_set membership")

    # Ranks that disagree: the construction allgather raises the same message everywhere.
    expect_error(ValueError, "hvd_hier.DistributedOptimizer: ranks disagree on local_steps: rank 0 "
                 "has 2, rank 2 has 3; every rank must pass the same arguments",
                 DO, sgd(m), named_parameters=np_(), local_steps=3 if rank == 2 else 2)
    other = Net(out=3 if rank == 3 else 2)
    expect_error(ValueError, "hvd_hier.DistributedOptimizer: ranks disagree on 'fc.weight': rank 0 "
                 "has shape (2, 4), torch.float32, strides (4, 1) on cpu, rank 3 has shape (3, 4), "
                 "torch.float32, strides (4, 1) on cpu; every rank must build the same model in "
                 "the same order", DO, sgd(other), named_parameters=other.named_parameters())
    report("rank disagreement")

    # Sparse gradients after warmup: an error naming the parameter, or densified on request.
    emb = torch.nn.Embedding(10, 3, sparse=True)
    torch.nn.init.zeros_(emb.weight)
    opt = DO(torch.optim.SGD(emb.parameters(), lr=0.5), named_parameters=emb.named_parameters(),
             local_steps=1, local_rounds=2, group_size=2)
    emb(torch.tensor([rank])).sum().backward()
    expect_error(ValueError, "hvd_hier.DistributedOptimizer: 'weight' has a sparse gradient, which "
                 "the averaging phase does not take; pass sparse_as_dense=True (or use a dense "
                 "embedding)", opt.step)
    assert opt.averaging_stats()["steps"] == 0
    opt = DO(torch.optim.SGD(emb.parameters(), lr=0.5), named_parameters=emb.named_parameters(),
             local_steps=1, local_rounds=2, group_size=2, sparse_as_dense=True)
    opt.step()  # the gradient is still there: one row of ones on each rank
    # Local step: row `rank` moves to -0.5; then the pair averages: -0.25 on both its rows.
    expected = torch.zeros(10, 3)
    for r in {0: (0, 1), 1: (0, 1), 2: (2, 3), 3: (2, 3)}[rank]:
        expected[r] -= 0.25
    assert torch.equal(emb.weight.detach(), expected), (emb.weight, expected)
    report("sparse gradients")

    # After all of that the ranks are in step: a valid optimizer trains and averages.
    torch.manual_seed(0)
    net = Net()
    hvd.broadcast_parameters(net.state_dict(), root_rank=0)
    opt = DO(torch.optim.SGD(net.parameters(), lr=0.1), named_parameters=net.named_parameters(),
             local_steps=2, local_rounds=2, group_size=2)
    for _ in range(4):
        opt.zero_grad()
        net.fc(torch.full((1, 4), float(rank))).sum().backward()
        opt.step()
    w = hvd.allgather(net.fc.weight.detach()[None], name="final.weights")
    assert all(torch.equal(w[0], w[i]) for i in range(size)), w
    assert opt.averaging_stats()["global_averages"] == 1
    report("still in step")


if __name__ == "__main__":
    main(run)
