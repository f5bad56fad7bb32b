"""One level's averaging at one step: the non-finite check, the reduction over the level's
groups (of the model, or of compressed deltas), the level's outer step (if it has ``outer``),
and the anchors of the levels below, which start again from the new model."""

from __future__ import annotations

import time
import warnings
from typing import List, Optional, Tuple

import torch

import horovod.torch as hvd

from .collectives import NonFiniteError, wait
from .state import HierState

__all__ = ["level_name", "nonfinite_ranks", "finite_divisor", "average_level", "take_first_anchors",
           "relink"]


def level_name(config, level: int) -> str:
    """How a level is named in messages and collectives: "local" and "global" for the
    two-level form, "level i" otherwise."""
    if config.shorthand:
        return "global" if level == len(config.levels) - 1 else "local"
    return f"level {level}"


def all_finite(tensors) -> bool:
    """Whether every value of ``tensors`` is finite. One sum per tensor: an inf or a NaN makes
    any sum it enters non-finite, and a sum runs vectorised where a max-abs pass does not
    (on the CPU, 5 against 65 ms for ResNet-18's 52 MB). A non-finite sum may also come from
    finite values too large to add up; then the max-abs pass decides."""
    tensors = [t for t in tensors if t.numel()]
    if not tensors:
        return True
    # (each in its own dtype: a float64 value past float32's range is finite)
    if bool(torch.stack([torch.isfinite(t.sum()) for t in tensors]).all()):
        return True
    peaks = torch._foreach_norm(tensors, float("inf"))  # NaN and inf propagate
    return bool(torch.stack([torch.isfinite(x) for x in peaks]).all())


def nonfinite_ranks(tensors, process_set, members: List[int], tag: str,
                    deadline: Optional[float]) -> List[int]:
    """The ranks of ``members`` whose ``tensors`` hold inf or NaN (every rank of the set gets
    the same answer): ``all_finite`` here, then one allreduce of a flag per rank."""
    finite = all_finite(tensors)
    flags = torch.zeros(len(members), dtype=torch.float32)
    flags[members.index(hvd.rank())] = 0.0 if finite else 1.0
    handle = hvd.allreduce_async(flags, op=hvd.Sum, name=f"hvd_hier.{tag}.nonfinite",
                                 process_set=process_set)
    flags = wait(handle, deadline)
    return [r for r, f in zip(members, flags.tolist()) if f > 0]


def finite_divisor(h: HierState, level: int, t: int, deadline: Optional[float],
                   table: Optional[List[torch.Tensor]] = None) -> Tuple[int, bool]:
    """The non-finite policy before level ``level`` averages at step ``t`` (``table``: the
    values it will reduce, default the averaged tensors): ``(divisor, dropped)``, how many
    ranks' values the average divides by and whether this rank's were left out. Raises
    ``NonFiniteError`` (nothing averaged) or, with ``nonfinite="skip"``, makes this rank
    contribute nothing if it is a non-finite one (zeroed values; for a compressed level, a
    zero delta)."""
    lt = h.topology.levels[level]
    members, size = lt.group, len(lt.group)
    kind = level_name(h.config, level)
    table = h.averager.tensors if table is None else table
    bad = nonfinite_ranks(table, lt.process_set, members, kind.replace(" ", ""), deadline)
    if not bad:
        return size, False
    where = f"rank {bad[0]}" if len(bad) == 1 else f"ranks {', '.join(map(str, bad))}"
    if h.config.nonfinite == "raise" or len(bad) == size:
        raise NonFiniteError(
            f"hvd_hier: the parameters of {where} hold inf or NaN at step {t}, before the "
            f"{kind} averaging of ranks {members}; nothing was averaged, so the other ranks' "
            "parameters are intact" + (
                "" if len(bad) == size else
                " (nonfinite='skip' would average the finite ranks instead)"))
    warnings.warn(f"hvd_hier: step {t}, {kind} averaging: the parameters of {where} hold inf "
                  f"or NaN; averaging the other {size - len(bad)} ranks (nonfinite='skip')")
    h.stats.skipped_contributions += len(bad)
    dropped = hvd.rank() in bad
    if dropped:  # contribute nothing; receive the finite ranks' average
        anchor = h.anchors[level]
        if anchor is not None and anchor.reducer is not None:
            anchor.reducer.drop_contribution(table)  # a zero delta
        else:
            with torch.no_grad():
                torch._foreach_zero_(list(table))
    return size - len(bad), dropped


def relink(h: HierState) -> None:
    """Flat storage: tensors whose ``.data`` was re-assigned go back into their slots (an
    anchor copies the flat buffers, and the compressed path reads the tensors)."""
    if h.config.flat_storage:
        h.averager.relink()


def take_first_anchors(h: HierState) -> None:
    """At the first step after warmup, before its update: every anchor neither taken nor
    loaded from a checkpoint becomes the model."""
    pending = [a for a in h.anchors if a is not None and not a.taken]
    if pending:
        relink(h)
        for anchor in pending:
            anchor.take()


def average_level(h: HierState, level: int, t: int, deadline: Optional[float]) -> None:
    """Level ``level``'s averaging at step ``t`` on this rank (``StallError`` past
    ``deadline``), counted in its statistics."""
    lt = h.topology.levels[level]
    start = time.perf_counter()
    # a group of one rank has no process set: its average is itself
    divisor = finite_divisor(h, level, t, deadline)[0] if len(lt.group) > 1 else 1
    tag = level_name(h.config, level).replace(" ", "")
    anchor = h.anchors[level]
    if anchor is not None and anchor.reducer is not None and len(lt.group) > 1:
        relink(h)
        moved = anchor.reduce_compressed(lt.process_set, lt.group, hvd.rank(), divisor, tag,
                                         deadline)
    else:
        moved = h.averager.average(lt.process_set, divisor, tag, deadline)
        if anchor is not None:
            anchor.after_mean()
    for below in h.anchors[:level]:  # the levels below start again from this model
        if below is not None:
            below.take()
    h.stats.levels[level].add(moved, time.perf_counter() - start)
