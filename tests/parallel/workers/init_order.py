"""hvd.init() called before importing hvd_hier, with dynamic process sets off: building local
groups fails on every rank with a message that says what to do; group sizes that need no
new process set (1 and all ranks) still work."""

import torch

import horovod.torch as hvd

hvd.init()  # before hvd_hier: dynamic process sets stay off (HOROVOD_DYNAMIC_PROCESS_SETS=0)

import hvd_hier  # noqa: E402
from common import expect_error, main, report  # noqa: E402


def run():
    model = torch.nn.Linear(2, 2)
    make = lambda s: hvd_hier.DistributedOptimizer(  # noqa: E731
        torch.optim.SGD(model.parameters(), lr=0.1), named_parameters=model.named_parameters(),
        group_size=s)
    expect_error(RuntimeError, "hvd_hier builds its local groups as Horovod process sets, which "
                 "needs dynamic process sets. Import hvd_hier before calling hvd.init() (it then "
                 "enables them), or call hvd.init(process_sets='dynamic'), or set "
                 "HOROVOD_DYNAMIC_PROCESS_SETS=1 in the environment of every rank.", make, 2)
    for s in (1, hvd.size()):
        opt = make(s)
        assert opt.averaging_stats()["group_size"] == s
    report("dynamic process sets off")


if __name__ == "__main__":
    main(run)
