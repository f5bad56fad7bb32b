"""One training step of the language-model benchmark, for the planner to time:

    PYTHONPATH=examples/lm python -m hvd_hier.plan --step plan_step:gpt --json plan.json

(under horovodrun, or the simulated cluster's launcher). The GPT's size and the windows per
step come from ``LM_SIZE`` (default ``1m``) and ``LM_BATCH`` (default 4), as train_lm.py's
``--size`` and ``--batch-size``: AdamW, a clipped gradient, windows of the training split.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402
from gpt import decay_groups, make_gpt  # noqa: E402


def gpt():
    """(model, step): step() is one of train_lm.py's steps without any averaging."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    size, batch = os.environ.get("LM_SIZE", "1m"), int(os.environ.get("LM_BATCH", "4"))
    model = make_gpt(size)
    opt = torch.optim.AdamW(decay_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95))
    data = corpus.load().split("train")
    g = torch.Generator().manual_seed(0)

    def step():
        x, y = corpus.sample_batch(data, batch, model.config.context, g)
        opt.zero_grad()
        model.loss(x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return model, step
