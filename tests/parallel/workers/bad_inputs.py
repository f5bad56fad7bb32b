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

    # Pure argument and tensor checks are unit tests (tests/unit/test_config.py); two of them
    # here show that such an error is raised on every rank and leaves the ranks in step.
    expect_error(ValueError, "group_size=3 does not divide the 4 ranks of process_set; pick a "
                 "divisor of 4 or group_size='local'", DO, sgd(m), named_parameters=np_(),
                 group_size=3)
    expect_error(ValueError, "pass either levels= or group_size, not both: levels=[(K1, S), "
                 "(K1 * K2, 'all')] is the two-level form", DO, sgd(m), named_parameters=np_(),
                 levels=[(1, 2), (2, "all")], group_size=2)
    expect_error(ValueError, "levels[1], the outermost level, must span the whole process set of 4 "
                 "ranks, got groups [[0, 1], [2, 3]]", DO, sgd(m), named_parameters=np_(),
                 levels=[(1, 1), (2, 2)])
    report("argument errors")

    unadded = hvd.ProcessSet([0, 1])
    expect_error(ValueError, f"process_set must be an initialised Horovod process set, got {unadded}",
                 DO, sgd(m), process_set=unadded)
    report("type errors")

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
