"""group_size='local' follows the hosts horovodrun placed the ranks on.

Run with `-H localhost:2,127.0.0.1:2`: two host names of this machine, which Horovod treats as
two hosts (ranks 0, 1 on the first, 2, 3 on the second). With `uneven` as argument, run with
`-H localhost:3,127.0.0.1:1`, where 'local' groups cannot be formed.
"""

import sys

import torch

import horovod.torch as hvd
import hvd_hier
from common import expect_error, init, main, report


def run():
    rank, size = init()
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(float(rank))
        model.bias.fill_(float(rank))
    make = lambda: hvd_hier.DistributedOptimizer(  # noqa: E731
        torch.optim.SGD(model.parameters(), lr=0.0), named_parameters=model.named_parameters(),
        local_steps=1, local_rounds=2)
    if sys.argv[1:] == ["uneven"]:
        expect_error(ValueError, "group_size='local' needs the same number of ranks on every "
                     "host, got {'localhost': 3, '127.0.0.1': 1}; pass an integer group_size "
                     "that divides 4", make)
        report("uneven hosts")
        return
    opt = make()
    stats = opt.averaging_stats()
    expected = [0, 1] if rank < 2 else [2, 3]
    assert stats["group"] == expected and stats["num_groups"] == 2, stats
    opt.step()  # u=1: local averaging within the host
    assert torch.equal(model.weight, torch.full((2, 2), sum(expected) / 2)), model.weight
    opt.step()  # u=2: global averaging
    assert torch.equal(model.weight, torch.full((2, 2), 1.5)), model.weight
    report("groups follow hosts")


if __name__ == "__main__":
    main(run)
