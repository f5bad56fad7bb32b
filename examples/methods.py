"""The training methods the examples compare, shared by train.py, lm/train_lm.py and the
network benchmark's worker: their command-line flags, their optimizers, and the few
collectives a training script needs over Horovod or ``torch.distributed``.

* ``sync``   ``hvd.DistributedOptimizer``: gradients averaged every step;
* ``kavg``   hvd_hier with groups of one: K-AVG (local SGD), a global average every K1*K2 steps;
* ``hier``   hvd_hier with ``--group-size`` S: Hier-AVG, a local average every K1 steps, a
             global one every K1*K2;
* ``torch``  PyTorch's ``PostLocalSGDOptimizer`` with a ``HierarchicalModelAverager``
             ({K1: S, K1*K2: all ranks}) over ``torch.distributed`` Gloo: the same schedule in
             the library a user would pick instead (started by torchrun, or by the cluster's
             launcher, not by horovodrun).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections import OrderedDict
from typing import Dict, List, Optional

import torch

HVD_ALGOS = ("sync", "kavg", "hier")


def compression_arg(text: str) -> str:
    """--global-compression: a codec's name, or a TopK by its short name (topk0.02_int2)."""
    from hvd_hier.config.codecs import codec_named
    from hvd_hier.config.levels import CODECS
    if text not in CODECS and isinstance(codec_named(text), str):
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(CODECS)} or topk<fraction>_<int8|int4|int2>, got {text!r}")
    return text


def compression_of(name: Optional[str]):
    """What ``Level(compression=...)`` takes for --global-compression's ``name``."""
    from hvd_hier.config.codecs import codec_named
    return codec_named(name)


def add_method_args(p, algos=HVD_ALGOS):
    """The flags that choose a method and its schedule."""
    p.add_argument("--algo", choices=algos, default="hier",
                   help="sync: hvd.DistributedOptimizer; kavg: hvd_hier with group size 1 "
                        "(K = K1*K2); hier: hvd_hier with --group-size"
                        + ("; torch: PyTorch's PostLocalSGDOptimizer with its hierarchical "
                           "averager, the same schedule" if "torch" in algos else ""))
    p.add_argument("--local-steps", "--k1", type=int, default=2, help="K1")
    p.add_argument("--local-rounds", "--k2", type=int, default=4, help="K2")
    p.add_argument("--group-size", default="local",
                   help="S: an integer, or 'local' (the ranks of each host)")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--outer-lr", type=float, default=None,
                   help="hier/kavg: an outer optimizer at the global level, SGD at this "
                        "learning rate on the anchor (default: plain averaging)")
    p.add_argument("--outer-momentum", type=float, default=0.9,
                   help="the outer optimizer's momentum (Nesterov when > 0)")
    p.add_argument("--global-compression", type=compression_arg, default=None,
                   help="hier/kavg: reduce the global level's deltas in this encoding")
    p.add_argument("--no-error-feedback", action="store_true",
                   help="hier/kavg: drop what --global-compression's encoding lost (int8, int4, "
                        "int2, top-k) instead of adding it to the next delta")
    p.add_argument("--global-fragments", type=int, default=1,
                   help="hier/kavg: reduce the global level's tensors in this many fragments, "
                        "one every K1*K2/F steps in turn (Streaming DiLoCo)")
    p.add_argument("--overlap-steps", type=int, default=None,
                   help="hier/kavg: the global reduction runs behind this many steps "
                        "(1 <= D < K1*K2)")
    p.add_argument("--flat-storage", action="store_true",
                   help="hvd_hier's persistent flat storage (no copies when averaging)")
    p.add_argument("--seed", default="0",
                   help="an integer, or a comma-separated list: one run per seed in this launch "
                        "(then --out must contain {seed})")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_method_args(p, args):
    """Parse and check what add_method_args added (p.error names the flag and its value)."""
    for name in ("group_size", "data_group_size"):
        value = getattr(args, name, None)
        if value is not None and value != "local":
            try:
                setattr(args, name, int(value))
            except ValueError:
                p.error(f"--{name.replace('_', '-')} must be an integer or 'local', got {value!r}")
    for name in ("local_steps", "local_rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup_steps < 0:
        p.error(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    if args.global_fragments < 1:
        p.error(f"--global-fragments must be >= 1, got {args.global_fragments}")
    try:
        args.seeds = [int(v) for v in str(args.seed).split(",")]
    except ValueError:
        p.error(f"--seed must be an integer or a comma-separated list of integers, "
                f"got {args.seed!r}")
    if len(args.seeds) > 1 and args.out and "{seed}" not in args.out:
        p.error("with several seeds, --out must contain {seed}")
    args.seed = args.seeds[0]


def describe(args) -> str:
    if args.algo == "sync":
        return "sync"
    s = "1" if args.algo == "kavg" else args.group_size
    return (f"{args.algo} K1={args.local_steps} K2={args.local_rounds} S={s}"
            + (f" outer lr={args.outer_lr:g} m={args.outer_momentum:g}"
               if args.outer_lr is not None else "")
            + (f" {args.global_compression}" if args.global_compression else "")
            + (" without error feedback" if getattr(args, "no_error_feedback", False) else "")
            + (f" {args.global_fragments} fragments"
               if getattr(args, "global_fragments", 1) > 1 else "")
            + (f" overlap {args.overlap_steps}" if args.overlap_steps else ""))


def outer_factory(lr: Optional[float], momentum: float):
    """The global level's outer optimizer: SGD at ``lr``, Nesterov when ``momentum`` > 0."""
    if lr is None:
        return None
    return functools.partial(torch.optim.SGD, lr=lr, momentum=momentum, nesterov=momentum > 0)


def make_optimizer(args, base: torch.optim.Optimizer, model: torch.nn.Module, comm=None):
    """``base`` wrapped for ``args.algo`` (the hvd_hier and Horovod methods need
    ``hvd.init()`` first; ``torch`` needs ``comm``, a Comm over torch.distributed)."""
    if args.algo == "torch":
        s = group_size(args.group_size, comm.local_size)
        opt, counters = torch_averaging_optimizer(base, args.local_steps, args.local_rounds, s,
                                                  comm.size)
        opt.averaging_counters = counters
        return opt
    import horovod.torch as hvd
    import hvd_hier
    if args.algo == "sync":
        return hvd.DistributedOptimizer(base, named_parameters=model.named_parameters())
    return hvd_hier.DistributedOptimizer(
        base, named_parameters=model.named_parameters(), warmup_steps=args.warmup_steps,
        buffers=model.buffers(), flat_storage=args.flat_storage, **schedule_args(args))


def schedule_args(args) -> Dict[str, object]:
    """hvd_hier's schedule for the method flags ``args`` (``schedule_kwargs``)."""
    return schedule_kwargs(
        args.local_steps, args.local_rounds, 1 if args.algo == "kavg" else args.group_size,
        compression_of(args.global_compression),
        outer_factory(args.outer_lr, args.outer_momentum), args.overlap_steps,
        not getattr(args, "no_error_feedback", False), getattr(args, "global_fragments", 1))


def schedule_kwargs(k1: int, k2: int, size, codec=None, outer=None, overlap_steps=None,
                    error_feedback: bool = True, fragments: int = 1) -> Dict[str, object]:
    """hvd_hier.DistributedOptimizer's schedule arguments: the two-level shorthand, or
    ``levels=`` where the global level takes options the shorthand has no word for
    (error_feedback, fragments)."""
    options = {"outer": outer, "overlap_steps": overlap_steps}
    extra = {} if error_feedback else {"error_feedback": False}
    if fragments > 1:
        extra["fragments"] = fragments
    if not extra:
        return {"local_steps": k1, "local_rounds": k2, "group_size": size,
                "global_compression": codec, **options}
    import hvd_hier
    return {"levels": [(k1, size), hvd_hier.Level(k1 * k2, "all", compression=codec,
                                                  **options, **extra)]}


def group_size(value, local_size: int) -> int:
    """S as an integer: ``'local'`` is the ranks per host."""
    return local_size if value == "local" else int(value)


def torch_averaging_optimizer(base, k1: int, k2: int, local_size: int, size: int):
    """PyTorch's PostLocalSGDOptimizer with a HierarchicalModelAverager that averages within
    groups of ``local_size`` contiguous ranks every ``k1`` steps and over all ``size`` ranks
    every ``k1 * k2`` (the widest due group only, as PyTorch does; its first step already
    averages, over all ranks). Returns the optimizer and its counters, which every averaging
    updates: ``local``, ``global`` (how many) and ``seconds_local``, ``seconds_global``."""
    from torch.distributed.algorithms.model_averaging.hierarchical_model_averager import (
        HierarchicalModelAverager)
    from torch.distributed.optim import PostLocalSGDOptimizer
    periods = OrderedDict()
    if 1 < local_size < size and k2 > 1:
        periods[k1] = local_size
    periods[k1 * k2] = size
    averager = HierarchicalModelAverager(periods, warmup_steps=0)
    average = averager.average_parameters
    counters = {"local": 0, "global": 0, "seconds_local": 0.0, "seconds_global": 0.0}

    def counted_average(params):
        step = averager.step  # which group it will use: the largest period dividing the step
        period = next((p for p in reversed(averager._periods) if step % p == 0), None)
        if period is None:
            return average(params)
        kind = "global" if periods[period] == size else "local"
        start = time.perf_counter()
        average(params)
        counters[kind] += 1
        counters["seconds_" + kind] += time.perf_counter() - start

    averager.average_parameters = counted_average
    return PostLocalSGDOptimizer(base, averager), counters


def averaging_counters(args, opt, steps: int, param_bytes: int) -> Dict[str, int]:
    """Averagings done and bytes each rank reduced in them, after ``steps`` steps: hvd_hier's
    own statistics; for sync one gradient allreduce of the parameters per step; for torch the
    averager's own count (each averaging reduces the parameters once)."""
    if args.algo in ("kavg", "hier"):
        s = opt.averaging_stats()
        counts = {k: s[k] for k in ("local_averages", "global_averages", "bytes_local",
                                    "bytes_global")}
        if args.algo == "kavg":  # hvd_hier counts the "averagings" of its groups of one
            counts["local_averages"] = 0
        return counts
    if args.algo == "sync":
        return {"local_averages": 0, "global_averages": steps, "bytes_local": 0,
                "bytes_global": steps * param_bytes}
    c = opt.averaging_counters
    return {"local_averages": c["local"], "global_averages": c["global"],
            "bytes_local": c["local"] * param_bytes, "bytes_global": c["global"] * param_bytes}


def schedule_position(args, steps: int) -> int:
    """Where ``steps`` steps leave the schedule: steps since the last global averaging
    (PyTorch's averager averages globally after steps 1, 1 + K1*K2, ...)."""
    if args.algo == "sync" or steps <= args.warmup_steps:
        return 0
    u = steps - args.warmup_steps - (1 if args.algo == "torch" else 0)
    return u % (args.local_steps * args.local_rounds)


class Comm:
    """The few collectives a training script needs, over Horovod or torch.distributed
    (``torch``: initialised from the environment torchrun or the cluster launcher sets)."""

    def __init__(self, backend: str):
        self.backend = backend
        if backend == "horovod":
            import hvd_hier  # noqa: F401  (before hvd.init: dynamic process sets)
            import horovod.torch as hvd
            hvd.init()
            self.hvd = hvd
            self.rank, self.size, self.local_size = hvd.rank(), hvd.size(), hvd.local_size()
        elif backend == "torch":
            import torch.distributed as dist
            dist.init_process_group("gloo")
            self.dist = dist
            self.rank, self.size = dist.get_rank(), dist.get_world_size()
            self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", self.size))
        else:
            raise ValueError(f"backend must be 'horovod' or 'torch', got {backend!r}")

    def barrier(self):
        if self.backend == "horovod":
            self.hvd.barrier()
        else:
            self.dist.barrier()

    def gather(self, obj) -> List:
        if self.backend == "horovod":
            return self.hvd.allgather_object(obj)
        out = [None] * self.size
        self.dist.all_gather_object(out, obj)
        return out

    def average(self, tensors: List[torch.Tensor], name: str) -> List[torch.Tensor]:
        """The mean over all ranks of each tensor (new tensors)."""
        if self.backend == "horovod":
            return self.hvd.grouped_allreduce(tensors, op=self.hvd.Average, name=name)
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        self.dist.all_reduce(flat)
        flat /= self.size
        return [c.view_as(t).to(t.dtype) for c, t in zip(flat.split([t.numel() for t in tensors]),
                                                         tensors)]

    def sum(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        if self.backend == "horovod":
            return self.hvd.allreduce(tensor, op=self.hvd.Sum, name=name)
        out = tensor.clone()
        self.dist.all_reduce(out)
        return out

    def close(self):
        """Wait for every rank, then shut Horovod down. torch.distributed's groups are left to
        the process's end: tearing down the averager's Gloo subgroups aborted a finished rank
        once under load ("terminate called without an active exception"), so a script that
        used them leaves through ``exit_now``."""
        self.barrier()  # nobody leaves while another still needs it
        if self.backend == "horovod":
            self.hvd.shutdown()


def exit_now(code: int = 0):
    """End the process at once, after flushing output, without running C++ destructors
    (torch.distributed's Gloo threads): for a script whose work is done and written."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
