"""The non-finite check before a reduction: does any rank of the group hold inf or NaN, and
what then (``nonfinite="raise"`` or ``"skip"``).

Each rank sums each of its tensors (an inf or a NaN makes any sum it enters non-finite; a
non-finite sum of finite values too large to add up is settled by a max-abs pass), then the
group allreduces one flag per rank, so every rank of the group gets the same answer.
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Tuple

import torch

import horovod.torch as hvd

from ..comm.collectives import wait
from ..errors import NonFiniteError

__all__ = ["all_finite", "nonfinite_ranks", "finite_divisor"]


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


def finite_divisor(level, table, t: int, deadline: Optional[float], policy: str,
                   stats) -> Tuple[int, bool]:
    """The non-finite policy before ``level`` (a ``LevelRuntime``) reduces ``table`` (the
    values it will reduce) at step ``t``: ``(divisor, dropped)``, how many ranks' values the
    average divides by and whether this rank's were left out. Raises ``NonFiniteError``
    (nothing averaged) or, with ``policy="skip"``, makes this rank contribute nothing if it is
    a non-finite one (``level.drop_contribution``) and counts it in ``stats``."""
    lt = level.topology
    members, size = lt.group, len(lt.group)
    bad = nonfinite_ranks(table, lt.process_set, members, level.tag, deadline)
    if not bad:
        return size, False
    where = f"rank {bad[0]}" if len(bad) == 1 else f"ranks {', '.join(map(str, bad))}"
    if policy == "raise" or len(bad) == size:
        raise NonFiniteError(
            f"hvd_hier: the parameters of {where} hold inf or NaN at step {t}, before the "
            f"{level.name} averaging of ranks {members}; nothing was averaged, so the other "
            "ranks' parameters are intact" + (
                "" if len(bad) == size else
                " (nonfinite='skip' would average the finite ranks instead)"))
    warnings.warn(f"hvd_hier: step {t}, {level.name} averaging: the parameters of {where} hold "
                  f"inf or NaN; averaging the other {size - len(bad)} ranks (nonfinite='skip')")
    stats.skipped_contributions += len(bad)
    dropped = hvd.rank() in bad
    if dropped:  # contribute nothing; receive the finite ranks' average
        level.drop_contribution(table)
    return size - len(bad), dropped
