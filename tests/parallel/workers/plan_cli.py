"""``python -m hvd_hier.plan`` as a user runs it under horovodrun (its arguments are this
script's); ``tiny`` is a ``--step module:function`` for it."""

import sys

import torch

from hvd_hier.plan import cli as plan


def tiny():
    """A small model and one training step of it (plain SGD, no communication)."""
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return model, step


if __name__ == "__main__":
    sys.exit(plan.main(sys.argv[1:]))
