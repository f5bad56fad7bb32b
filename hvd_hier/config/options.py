"""The arguments of ``hvd_hier.DistributedOptimizer``, checked: pure functions, no collective.

``make_config`` turns the keyword arguments into a frozen ``HierConfig`` or raises the
``ValueError`` (``TypeError``) that names the argument and its value; ``collect_tensors``
lists what will be averaged and checks it. Both run on every rank before any collective, and
the unit tests call them directly, without processes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from horovod.torch.compression import Compression
from horovod.torch.mpi_ops import Adasum, Average, Sum

from ..reduce.buckets import SUPPORTED_DTYPES, flat_view
from ..reduce.flat import check_no_aliasing
from .levels import Level, levels_from_args
from .schedule import HierSchedule, check_int

__all__ = ["NONFINITE_POLICIES", "HierConfig", "make_config", "Tensors", "collect_tensors"]

NONFINITE_POLICIES = ("raise", "skip")


@dataclass(frozen=True)
class HierConfig:
    """Everything the optimizer was asked to do, validated (see ``DistributedOptimizer``)."""

    levels: Tuple[Level, ...]
    shorthand: bool  #: given as local_steps / local_rounds / group_size, not levels=
    schedule: HierSchedule
    op: object
    backward_passes_per_step: int
    gradient_predivide_factor: float
    groups: object
    sparse_as_dense: bool
    bucket_cap_mb: float
    flat_storage: bool
    nonfinite: str
    stall_timeout_s: Optional[float]
    deterministic: bool

    @property
    def bucket_cap_bytes(self) -> int:
        return int(self.bucket_cap_mb * 2**20)

    def schedule_config(self) -> Dict[str, object]:
        """The schedule in the user's words (saved in checkpoints, compared on load)."""
        s = self.schedule
        if self.shorthand:
            out = {"local_steps": s.local_steps, "local_rounds": s.local_rounds,
                   "warmup_steps": s.warmup_steps, "group_size": self.levels[0].group_size}
            if self.levels[-1].options:  # outer=, global_compression=, overlap_steps=
                out["global_options"] = self.levels[-1].describe()[2]
            return out
        return {"levels": [lv.describe() for lv in self.levels], "warmup_steps": s.warmup_steps}

    def agreement(self) -> Dict[str, object]:
        """What every rank must have alike (compared key by key by the setup's allgather)."""
        s = self.schedule
        levels = ({"local_steps": s.local_steps, "local_rounds": s.local_rounds,
                   "group_size": self.levels[0].group_size,
                   "global_options": self.levels[-1].describe()[2]} if self.shorthand
                  else {"levels": [lv.describe() for lv in self.levels]})
        return {**levels, "warmup_steps": s.warmup_steps, "bucket_cap_mb": self.bucket_cap_mb,
                "op": str(self.op), "backward_passes_per_step": self.backward_passes_per_step,
                "sparse_as_dense": self.sparse_as_dense, "flat_storage": self.flat_storage,
                "nonfinite": self.nonfinite, "stall_timeout_s": self.stall_timeout_s,
                "deterministic": self.deterministic}


def _positive_number(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a number > 0{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return value


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def make_config(*, local_steps=None, local_rounds=None, group_size=None, levels=None,
                outer=None, global_compression=None, overlap_steps=None, warmup_steps=0, op=None,
                compression=None,
                backward_passes_per_step=1,
                gradient_predivide_factor=1.0, num_groups=0, groups=None, sparse_as_dense=False,
                bucket_cap_mb=25.0, flat_storage=False, nonfinite="raise", stall_timeout_s=600.0,
                deterministic=False, elastic=False) -> HierConfig:
    """Check ``DistributedOptimizer``'s arguments (``op=None``: ``hvd.Average``;
    ``compression=None``: none) and return them as a ``HierConfig``. Warns for legal but
    pointless or deprecated settings."""
    op = Average if op is None else op
    compression = Compression.none if compression is None else compression
    shorthand = levels is None
    levels = levels_from_args(levels, local_steps, local_rounds, group_size, outer,
                              global_compression, overlap_steps)
    schedule = HierSchedule(periods=[lv.period for lv in levels], warmup_steps=warmup_steps,
                            fragments=[lv.options.get("fragments", 1) for lv in levels])
    if elastic:
        _check_elastic(levels)
    backward_passes_per_step = _check_reduction(op, backward_passes_per_step,
                                                gradient_predivide_factor)
    num_groups = check_int("num_groups", num_groups, 0)
    if num_groups:
        warnings.warn("num_groups is deprecated in Horovod; use groups", DeprecationWarning)
        if groups is None:
            groups = num_groups
    bucket_cap_mb = _positive_number("bucket_cap_mb", bucket_cap_mb)
    flat_storage = _flag("flat_storage", flat_storage)
    if flat_storage and schedule.fragments[-1] > 1:
        raise ValueError(f"levels[{len(levels) - 1}]: fragments={schedule.fragments[-1]} "
                         "reduces parts of the model, which flat storage keeps in shared "
                         "buffers; pass flat_storage=False")
    stall_timeout_s = _positive_number("stall_timeout_s", stall_timeout_s, allow_none=True)
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}")
    deterministic = _flag("deterministic", deterministic)
    if deterministic and compression is not Compression.none:
        raise ValueError(
            f"deterministic=True reduces warmup gradients without compression, got "
            f"compression={getattr(compression, '__name__', compression)}; pass "
            "compression=hvd.Compression.none")
    _warn_every_step(schedule, levels, shorthand)
    return HierConfig(levels=levels, shorthand=shorthand, schedule=schedule, op=op,
                      backward_passes_per_step=backward_passes_per_step,
                      gradient_predivide_factor=float(gradient_predivide_factor), groups=groups,
                      sparse_as_dense=bool(sparse_as_dense), bucket_cap_mb=float(bucket_cap_mb),
                      flat_storage=flat_storage, nonfinite=nonfinite,
                      stall_timeout_s=stall_timeout_s, deterministic=deterministic)


def _check_elastic(levels) -> None:
    for i, lv in enumerate(levels):
        if isinstance(lv.group_size, tuple):
            raise ValueError(
                f"levels[{i}]: explicit rank lists cannot follow an elastic job's changing "
                "ranks; use an integer group_size, 'local' or 'all'")


def _check_reduction(op, backward_passes_per_step, gradient_predivide_factor) -> int:
    """The warmup's gradient reduction: ``op``, ``backward_passes_per_step`` (returned as an
    int) and ``gradient_predivide_factor``."""
    if op == Adasum:
        raise ValueError(
            "op=hvd.Adasum is not supported by hvd_hier.DistributedOptimizer (Adasum combines "
            "gradients, Hier-AVG averages models); use op=hvd.Average or hvd.Sum")
    if op not in (Average, Sum):
        raise ValueError(f"op must be hvd.Average or hvd.Sum, got {op!r}")
    backward_passes_per_step = check_int("backward_passes_per_step", backward_passes_per_step, 1)
    if isinstance(gradient_predivide_factor, bool) or not isinstance(
            gradient_predivide_factor, (int, float)) or not gradient_predivide_factor > 0:
        raise ValueError(
            f"gradient_predivide_factor must be a number > 0, got {gradient_predivide_factor!r}")
    if gradient_predivide_factor != 1.0 and op != Average:
        raise ValueError(
            f"gradient_predivide_factor={gradient_predivide_factor} needs op=hvd.Average")
    return backward_passes_per_step


def _warn_every_step(schedule, levels, shorthand: bool) -> None:
    """A legal but pointless setting: averaging after every step is synchronous SGD."""
    if schedule.period == 1 and schedule.warmup_steps == 0 and \
            not any("outer" in lv.options for lv in levels):
        what = "local_steps=1 and local_rounds=1" if shorthand else "an outermost level of period 1"
        warnings.warn(
            f"hvd_hier.DistributedOptimizer with {what} averages the "
            "model after every step: that is synchronous SGD, which hvd.DistributedOptimizer "
            "does faster by overlapping the gradient reduction with the backward pass")


@dataclass(frozen=True)
class Tensors:
    """What the optimizer averages: the parameters of ``param_groups`` (in order), then the
    floating-point ``buffers``; ``labels`` name each in messages."""

    params: List[torch.Tensor]
    names: List[str]  #: the parameters' labels: their name in named_parameters, or position
    buffers: List[torch.Tensor]

    @property
    def all(self) -> List[torch.Tensor]:
        return self.params + self.buffers

    @property
    def labels(self) -> List[str]:
        return self.names + [f"buffer {i}" for i in range(len(self.buffers))]


def check_tensors(tensors, labels) -> None:
    """One device, a dtype the averaging takes, a dense layout: ValueError naming the tensor."""
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        first = {}
        for n, t in zip(labels, tensors):
            first.setdefault(str(t.device), n)
        where = ", ".join(f"{n} on {d}" for d, n in first.items())
        raise ValueError(
            "hvd_hier.DistributedOptimizer: parameters and buffers must be on one device, "
            f"got {where}")
    for name, t in zip(labels, tensors):
        if t.dtype not in SUPPORTED_DTYPES:
            raise ValueError(
                f"hvd_hier.DistributedOptimizer: {name} has dtype {t.dtype}; averaging "
                "supports float32, float64, float16 and bfloat16")
        try:
            flat_view(t)
        except ValueError as exc:
            raise ValueError(f"hvd_hier.DistributedOptimizer: {name}: {exc}") from None


def collect_tensors(optimizer, named_parameters=None, buffers=None,
                    flat_storage: bool = False) -> Tensors:
    """The tensors ``optimizer`` will average, checked (``check_tensors``; with flat storage,
    no two may share memory)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "hvd_hier.DistributedOptimizer: optimizer must be a torch.optim.Optimizer, got "
            f"{type(optimizer).__name__}")
    names_by_id = {}
    if named_parameters:
        names_by_id = {id(p): n for n, p in named_parameters if isinstance(n, str)}
    params, names = [], []
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            params.append(p)
            name = names_by_id.get(id(p))
            names.append(repr(name) if name is not None else f"param_groups[{gi}]['params'][{pi}]")
    buffer_list = []
    if buffers is not None:
        if isinstance(buffers, torch.Tensor):
            raise TypeError("buffers must be an iterable of tensors, such as model.buffers()")
        buffer_list = [b for b in buffers if b.is_floating_point()]
    out = Tensors(params, names, buffer_list)
    check_tensors(out.all, out.labels)
    if flat_storage:
        try:
            check_no_aliasing(out.all, out.labels)
        except ValueError as exc:
            raise ValueError(f"hvd_hier.DistributedOptimizer: {exc}") from None
    return out
