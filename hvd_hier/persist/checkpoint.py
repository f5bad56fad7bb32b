"""Per-rank checkpoints for an exact resume at any step.

Between global averagings the ranks' models, momentum buffers and random streams differ, so
a checkpoint from which training continues bit for bit holds, for every rank:

* the model's ``state_dict()``;
* the optimizer's ``state_dict()``, which carries the Hier-AVG schedule position;
* the random number generators: torch (CPU and every CUDA device), NumPy, Python's ``random``;
* the data position: whatever the training loop needs to produce the same next batch (the
  epoch and batch index, a sampler's generator state...), passed as keyword arguments.

``save_checkpoint`` writes ``rank<r>.pt`` for each rank into one folder (atomically: a file is
complete or absent); ``load_checkpoint`` restores all of it and returns the extras. Loading
checks, on every rank and before anything is restored, that every rank found its file, that
the job has as many ranks as the one that saved, and that all files are from the same step;
otherwise every rank raises the same ``CheckpointError``, and nothing hangs.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

import horovod.torch as hvd

from ..comm.collectives import allgather_object
from ..errors import CheckpointError
from ..runtime import agreement

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "rng_state",
           "set_rng_state"]

_FORMAT = 1


def rng_state() -> Dict[str, Any]:
    """The states of torch's (CPU and CUDA), NumPy's and Python's generators."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _path(directory, rank: int) -> Path:
    return Path(directory) / f"rank{rank}.pt"


def save_checkpoint(directory, model: torch.nn.Module, optimizer, **extra) -> Path:
    """Write this rank's checkpoint to ``directory/rank<r>.pt`` and return its path.

    Call it on every rank at the same step. ``extra`` (picklable values, e.g. ``epoch=3,
    batch=120``) comes back from ``load_checkpoint``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rank = hvd.rank()
    sd = optimizer.state_dict()
    step = sd.get("hvd_hier", {}).get("step")
    payload = {"format": _FORMAT, "rank": rank, "size": hvd.size(), "step": step,
               "model": model.state_dict(), "optimizer": sd, "rng": rng_state(),
               "extra": dict(extra)}
    final = _path(directory, rank)
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, final)  # readers see a complete file or none
    return final


def load_checkpoint(directory, model: torch.nn.Module, optimizer) -> Dict[str, Any]:
    """Restore this rank's model, optimizer (schedule included) and random generators from
    ``directory`` and return the extras given to ``save_checkpoint``."""
    rank, size = hvd.rank(), hvd.size()
    payload, problem = None, None
    path = _path(directory, rank)
    try:
        payload = torch.load(path, weights_only=False)
        if payload.get("format") != _FORMAT:
            problem = f"{path} is not an hvd_hier checkpoint"
        elif payload["size"] != size:
            problem = (f"{directory} was saved by {payload['size']} ranks and this job has "
                       f"{size}; an exact resume needs the same number (for another size, load "
                       "one rank's model and optimizer and broadcast them)")
    except FileNotFoundError:
        problem = f"{path} does not exist"
    except Exception as exc:  # unreadable: say so on every rank
        problem = f"{path} cannot be read: {exc}"
    mine = {"rank": rank, "problem": problem,
            "step": None if payload is None else payload.get("step")}
    everyone = (allgather_object(mine, hvd.global_process_set, "hvd_hier.load_checkpoint")
                if size > 1 else [mine])
    problems = [f"rank {m['rank']}: {m['problem']}" for m in everyone if m["problem"]]
    if problems:
        raise CheckpointError("hvd_hier.load_checkpoint: " + "; ".join(problems))
    steps = {m["step"] for m in everyone}
    if len(steps) > 1:
        by_rank = ", ".join(f"rank {m['rank']} at step {m['step']}" for m in everyone)
        raise CheckpointError(f"hvd_hier.load_checkpoint: {directory} mixes steps: {by_rank}")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    set_rng_state(payload["rng"])
    if hasattr(optimizer, "hier_state"):
        # Settle the schedule position now, as the first step() would: the first backward
        # pass after the resume then reduces warmup gradients in its hooks, in the same
        # order as the uninterrupted run (and Gloo's sums come out bit for bit the same).
        agreement.agree(optimizer)
    return payload["extra"]
