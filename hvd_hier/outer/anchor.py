"""What a level with an outer optimizer or compression keeps between its reductions: the
anchor.

For a level with ``outer``, each of its groups keeps an *anchor* x̄: the model its ranks last
agreed on, one copy of the averaged tensors (parameters, then buffers) on every rank of the
group, identical across the group. An ``outer`` optimizer (any ``torch.optim.Optimizer``,
built by the user's callable over the anchor's copies of the parameters) steps on the
pseudo-gradient x̄ − ḡ, where ḡ is the group's mean of the parameters, and the parameters of
every rank of the group become the new x̄ (DiLoCo's outer step; with ``SGD(lr=1)`` it is
plain averaging up to rounding: x̄ − (x̄ − ḡ) is ḡ wherever x̄ − ḡ is exact). Buffers are
averaged plainly and their anchor follows the mean. A level with ``compression`` keeps an
anchor too (its deltas are taken from it; ``hvd_hier.reduce.codec``).

Lifecycle (driven by the level, ``hvd_hier.runtime.level``, and its reduction strategy):

* ``take()``: x̄ := the averaged tensors, at the first step after warmup (after the user's
  broadcast or checkpoint load), and whenever a level above this one reduces (the outer
  momentum is kept);
* ``outer_step()``: after the group's mean is in the tensors (the level's reduction);
* ``state_dict()`` / ``load_state_dict()``: in the optimizer's checkpoint, and broadcast
  from the first rank when the ranks agree on the schedule (first step, elastic reset).

With flat storage the anchor is flat too: one clone per buffer of flat storage, the anchor
tensors views into it at the same offsets, so that taking it is one copy per buffer.
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Sequence

import torch

from ..config.levels import OUTER_EXAMPLE, at, check_options, describe_callable

__all__ = ["make_outer", "Anchor"]


def make_outer(where: str, outer, tensors: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
    """``outer(tensors)``, checked: a ``torch.optim.Optimizer`` over exactly ``tensors``.
    ``ValueError`` naming the level (``where``) otherwise."""
    check_options(where, {"outer": outer})
    tensors = list(tensors)
    try:
        opt = outer(list(tensors))
    except Exception as exc:
        raise ValueError(at(where, f"outer={describe_callable(outer)} raised "
                                    f"{type(exc).__name__} when called with the {len(tensors)} "
                                    f"parameter tensors: {exc}")) from exc
    if not isinstance(opt, torch.optim.Optimizer):
        raise ValueError(at(where, f"outer={describe_callable(outer)} must return a "
                                    f"torch.optim.Optimizer, got {type(opt).__name__}"))
    got = [p for group in opt.param_groups for p in group["params"]]
    if len(got) != len(tensors) or {id(p) for p in got} != {id(t) for t in tensors}:
        raise ValueError(at(where, f"outer={describe_callable(outer)} must return an optimizer "
                                    f"over exactly the {len(tensors)} tensors it is given, got "
                                    f"one over {len(got)} tensor(s) that are not those; build it "
                                    f"from its argument, e.g. {OUTER_EXAMPLE}"))
    return opt


class Anchor:
    """One level's anchor and outer optimizer on this rank (see the module's docstring).

    Args:
        where: the level's name in messages (``levels[i]``).
        tensors: the averaged tensors, parameters first (flat-storage views, if so).
        num_params: how many of ``tensors`` are parameters (the outer optimizer's).
        outer: the level's ``outer`` callable, or None.
        flat_buckets: the ``FlatBucket``s of flat storage holding ``tensors``, or None.
    """

    def __init__(self, where: str, tensors: Sequence[torch.Tensor], num_params: int, outer=None,
                 flat_buckets: Optional[Sequence] = None):
        self.where = where
        self.tensors = list(tensors)
        self.num_params = num_params
        self.flat_buckets = list(flat_buckets) if flat_buckets else None
        with torch.no_grad():
            if self.flat_buckets:
                self.storages = [b.storage.detach().clone() for b in self.flat_buckets]
                anchor: List[Optional[torch.Tensor]] = [None] * len(self.tensors)
                for bucket, storage in zip(self.flat_buckets, self.storages):
                    for index, offset in bucket.members:
                        t = self.tensors[index]
                        anchor[index] = storage.as_strided(t.shape, t.stride(), offset)
                self.anchor = [a if a is not None else torch.empty_like(t)  # empty: no slot
                               for a, t in zip(anchor, self.tensors)]
            else:
                self.storages = None
                self.anchor = [t.detach().clone(memory_format=torch.preserve_format)
                               for t in self.tensors]
        self.taken = False
        self.outer = None if outer is None else make_outer(where, outer, self.anchor[:num_params])
        self.outer_name = None if outer is None else describe_callable(outer)

    def nbytes(self) -> int:
        """Memory the anchor holds (the outer optimizer's state aside)."""
        if self.storages:
            return sum(s.numel() * s.element_size() for s in self.storages)
        return sum(a.numel() * a.element_size() for a in self.anchor)

    def take(self, tensors: Optional[Sequence[torch.Tensor]] = None) -> None:
        """x̄ := the averaged tensors (all of them), or ``tensors`` (a copy of them)."""
        with torch.no_grad():
            if tensors is not None:
                pairs = [(a, t) for a, t in zip(self.anchor, tensors) if t.numel()]
                if pairs:
                    torch._foreach_copy_([a for a, _ in pairs], [t for _, t in pairs])
            elif self.storages:
                for storage, bucket in zip(self.storages, self.flat_buckets):
                    storage.copy_(bucket.storage)
            elif self.anchor:
                torch._foreach_copy_(self.anchor, self.tensors)
        self.taken = True

    def after_mean(self, tensors: Optional[Sequence[torch.Tensor]] = None) -> None:
        """The level's group mean is in the tensors (or in ``tensors``, a copy of them): the
        outer step if the level has one (its result goes there too), else x̄ := the mean."""
        if self.outer is not None:
            self.outer_step(tensors=tensors)
        else:
            self.take(tensors)

    def outer_step(self, pseudo_gradient: bool = False,
                   tensors: Optional[Sequence[torch.Tensor]] = None) -> None:
        """Step the outer optimizer on x̄ − ḡ, then every parameter := the new x̄ and every
        buffer := its anchor := its mean. The tensors hold ḡ (the group's mean), or with
        ``pseudo_gradient`` already x̄ − ḡ (a compressed reduction's −mean delta).
        ``tensors``: where ḡ is and the result goes, if not the averaged tensors themselves
        (an overlapped reduction's copy of them).

        The pseudo-gradient lives in the parameters' own memory (x̄ replaces it right after),
        so the outer step needs no memory besides the anchor and the outer optimizer's state."""
        n = self.num_params
        tensors = self.tensors if tensors is None else list(tensors)
        params, anchor = [t.detach() for t in tensors[:n]], self.anchor[:n]
        buffers, buffer_anchor = [t.detach() for t in tensors[n:]], self.anchor[n:]
        with torch.no_grad():
            if n:
                if not pseudo_gradient:
                    torch._foreach_neg_(params)  # -ḡ
                    torch._foreach_add_(params, anchor)  # x̄ - ḡ, rounded once
                for a, g in zip(anchor, params):
                    a.grad = g
                try:
                    self.outer.step()
                finally:
                    for a in anchor:
                        a.grad = None
                torch._foreach_copy_(params, anchor)
            if buffers:
                if pseudo_gradient:  # -(mean delta) -> x̄ + mean delta
                    torch._foreach_neg_(buffers)
                    torch._foreach_add_(buffers, buffer_anchor)
                torch._foreach_copy_(buffer_anchor, buffers)

    def reset(self) -> None:
        """Forget the anchor and the outer optimizer's state: the anchor is taken afresh at
        the next step after warmup, the outer momentum from zero."""
        self.taken = False
        if self.outer is not None:
            self.outer.state.clear()

    def state_dict(self) -> dict:
        """The anchor (None before it was taken) and the outer optimizer's state."""
        return {"taken": self.taken, "anchor": list(self.anchor) if self.taken else None,
                "outer": None if self.outer is None else self.outer.state_dict(),
                "outer_name": self.outer_name}

    def load_state_dict(self, saved: dict) -> None:
        """Restore ``state_dict()`` (its other keys are ignored)."""
        anchor = saved.get("anchor")
        if saved.get("taken") and anchor is not None:
            if len(anchor) != len(self.anchor) or any(
                    a.shape != b.shape for a, b in zip(anchor, self.anchor)):
                raise ValueError(at(self.where, f"the saved anchor has {len(anchor)} tensors "
                                                 "of other shapes than this optimizer's "
                                                 "averaged tensors"))
            with torch.no_grad():
                for a, b in zip(self.anchor, anchor):
                    a.copy_(b)
            self.taken = True
        else:
            self.taken = False
        if self.outer is not None:
            same = saved.get("outer_name", self.outer_name) == self.outer_name
            if saved.get("outer") is not None and same:
                self.outer.load_state_dict(saved["outer"])
            else:  # none saved, or another outer optimizer (its state would not fit this one)
                if saved.get("outer") is not None:
                    warnings.warn(f"hvd_hier: {self.where or 'the global level'}: the saved "
                                  f"outer optimizer was {saved.get('outer_name')}, this one is "
                                  f"{self.outer_name}; its state starts from zero")
                self.outer.state.clear()

