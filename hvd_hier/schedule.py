"""Which reduction Hier-AVG does at a given step: pure arithmetic, no torch, no Horovod.

Steps are the calls of ``optimizer.step()``, counted from 1. For ``t <= warmup_steps`` the
step is synchronous SGD (gradients averaged over all ranks). After that, with
``u = t - warmup_steps``:

* ``u % (K1 * K2) == 0``: global reduction, the model is averaged over all ranks;
* else ``u % K1 == 0``: local reduction, the model is averaged within the rank's group;
* else: nothing, the step is purely local.

A global step does no local averaging: one reduction per step at most.
"""

from __future__ import annotations

import enum
import operator
from dataclasses import dataclass
from typing import Dict

__all__ = ["Reduction", "HierSchedule", "check_int"]


class Reduction(str, enum.Enum):
    """What happens at one step besides the wrapped optimizer's update."""

    SYNC = "sync"  #: warmup: gradients averaged over all ranks before the update
    NONE = "none"  #: local step only
    LOCAL = "local"  #: model averaged within the local group after the update
    GLOBAL = "global"  #: model averaged over all ranks after the update


def check_int(name: str, value, minimum: int) -> int:
    """Return ``value`` as an int, or raise ``ValueError`` naming ``name`` and the value.

    Accepts Python and NumPy integers; rejects bools, floats (also integral ones such as
    ``4.0``) and anything below ``minimum``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r} (bool)")
    try:
        ivalue = operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})"
        ) from None
    if ivalue < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {ivalue}")
    return ivalue


@dataclass(frozen=True)
class HierSchedule:
    """The Hier-AVG schedule for ``local_steps`` (K1), ``local_rounds`` (K2), ``warmup_steps``.

    Example::

        >>> s = HierSchedule(local_steps=2, local_rounds=3, warmup_steps=1)
        >>> [s.reduction_at(t).value for t in range(1, 9)]
        ['sync', 'none', 'local', 'none', 'local', 'none', 'global', 'none']
    """

    local_steps: int
    local_rounds: int
    warmup_steps: int = 0

    def __post_init__(self):
        object.__setattr__(self, "local_steps", check_int("local_steps", self.local_steps, 1))
        object.__setattr__(self, "local_rounds", check_int("local_rounds", self.local_rounds, 1))
        object.__setattr__(self, "warmup_steps", check_int("warmup_steps", self.warmup_steps, 0))

    @property
    def period(self) -> int:
        """Steps between two global reductions after warmup: K1 * K2."""
        return self.local_steps * self.local_rounds

    def reduction_at(self, t: int) -> Reduction:
        """The reduction of step ``t`` (``t >= 1``)."""
        t = check_int("t", t, 1)
        if t <= self.warmup_steps:
            return Reduction.SYNC
        u = t - self.warmup_steps
        if u % self.period == 0:
            return Reduction.GLOBAL
        if u % self.local_steps == 0:
            return Reduction.LOCAL
        return Reduction.NONE

    def counts_through(self, t: int) -> Dict[str, int]:
        """How many steps of each kind happen in steps ``1..t`` (closed form)."""
        t = check_int("t", t, 0)
        sync = min(t, self.warmup_steps)
        u = t - sync
        global_ = u // self.period
        local = u // self.local_steps - global_
        return {
            "sync": sync,
            "local": local,
            "global": global_,
            "none": u - local - global_,
        }
