"""One averaging level on this rank, as an object: ``LevelRuntime``.

A level owns what it needs to reduce: its configuration (``Level``), its groups and process
sets (``LevelTopology``, once built), its anchor and outer optimizer (``Anchor``) and codec
(``DeltaReducer``), the reduction strategy it chose when its groups were built
(``hvd_hier.reduce.choice``), its statistics, its staged reductions in flight or pending and
the copies they use, and its part of the optimizer's state dict. The optimizer holds a list
of them, innermost first, and only asks the one that is due to reduce.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from ..config.levels import Level
from ..outer.anchor import Anchor
from ..reduce.choice import choose_immediate, choose_strategy
from ..reduce.codec import DeltaReducer
from ..reduce.pieces import Copy, LevelCopies
from ..reduce.staged import apply_correction
from ..comm.collectives import cpu_copy
from ..reduce.strategy import Context, InFlight, stopwatch
from .state import LevelStats

__all__ = ["level_name", "LevelRuntime", "describe_outer"]


def level_name(config, index: int) -> str:
    """How a level is named in messages and collectives: "local" and "global" for the
    two-level form, "level i" otherwise."""
    if config.shorthand:
        return "global" if index == len(config.levels) - 1 else "local"
    return f"level {index}"


class LevelRuntime:
    """One level on this rank (see the module's docstring). ``bind`` gives it its groups and
    chooses its strategy; until then it can be configured and restored, not reduce."""

    def __init__(self, index: int, spec: Level, name: str, tensors: Sequence[torch.Tensor],
                 ctx: Context, below: Sequence["LevelRuntime"], anchor: Optional[Anchor] = None,
                 reducer: Optional[DeltaReducer] = None):
        self.index, self.spec, self.name = index, spec, name
        self.tag = name.replace(" ", "")  #: its collectives' names
        self.tensors, self.ctx, self.below = list(tensors), ctx, list(below)
        self.anchor, self.reducer = anchor, reducer
        self.stats = LevelStats()
        self.topology = None  #: its ``LevelTopology``, once built
        self.immediate = self.strategy = None  #: chosen by ``bind``
        self.in_flight: List[InFlight] = []  #: staged reductions started, not yet added
        self._copies: Optional[LevelCopies] = None

    @property
    def overlap_steps(self) -> int:
        return self.spec.options.get("overlap_steps", 0)

    def bind(self, topology) -> None:
        """Take the groups (``LevelTopology``) of the job as it is now and choose how to
        reduce over them, once."""
        self.topology = topology
        self.immediate = choose_immediate(self, self.ctx, self.below)
        self.strategy = choose_strategy(self, self.ctx, self.below, self.immediate)

    def reduce(self, t: int, deadline: Optional[float]) -> Optional[InFlight]:
        """This level's reduction at step ``t`` (``StallError`` past ``deadline``)."""
        return self.strategy.start(t, deadline)

    def retake(self) -> None:
        """A level above reduced: the anchor starts again from the model (momentum kept)."""
        if self.anchor is not None:
            self.anchor.take()

    def drop_contribution(self, table) -> None:
        """This rank's values of ``table`` are non-finite and left out: it contributes a zero
        delta (compressed) or zeros."""
        if self.reducer is not None:
            self.reducer.drop_contribution(table)
        else:
            with torch.no_grad():
                torch._foreach_zero_(list(table))

    def copies(self, with_result: bool) -> LevelCopies:
        """The copies of the averaged tensors a staged reduction uses (made once)."""
        if self._copies is None:
            self._copies = LevelCopies(Copy(self.tensors))
        if with_result and self._copies.result is None:
            self._copies.result = Copy(self.tensors)
        return self._copies

    # -- staged reductions in flight ------------------------------------------------------
    def progress(self, submit: bool) -> None:
        """At a step boundary: move every running reduction on."""
        for red in self.in_flight:
            self.strategy.poll(red, submit)

    def complete(self, red: InFlight, deadline: Optional[float]) -> None:
        """``red`` is due: finish it (``StallError`` past ``deadline``) and add its
        correction."""
        self.strategy.finish(red, deadline)  # (counts its own time; nothing if finished)
        elapsed = stopwatch()
        apply_correction(self.ctx, red, self.below)
        self.in_flight.remove(red)
        self.stats.seconds += elapsed()

    def settle(self, deadline: Optional[float]) -> None:
        """Finish every reduction in flight (their corrections stay pending until due)."""
        for red in list(self.in_flight):
            self.strategy.finish(red, deadline)

    def discard(self, deadline: Optional[float] = None, running_only: bool = False,
                finish_running: bool = True) -> None:
        """Forget every reduction in flight and every pending correction (``running_only``:
        the running ones only). A running one is first run to its end (the other ranks take
        part in its collectives), unless ``finish_running`` is False (an elastic reset: its
        collectives belonged to the job before the reset)."""
        for red in self.in_flight:
            if red.pipeline is not None and finish_running:
                red.pipeline.drain(deadline)
            red.pipeline = None
        self.in_flight[:] = [red for red in self.in_flight if running_only and not red.running]

    def corrections(self) -> List[Dict[str, object]]:
        """The pending corrections as plain data with compact CPU copies (``settle`` first)."""
        out = []
        for red in self.in_flight:
            assert not red.running, "settle() the reductions in flight first"
            out.append({"level": red.level, "start": red.start, "due": red.due,
                        "dropped": red.dropped,
                        "correction": cpu_copy(list(red.correction))})
        return out

    def restore(self, item: Dict[str, object]) -> None:
        """Add ``item`` (one of ``corrections()``) to the pending corrections."""
        views = self.copies(with_result=False).snapshot.views
        values = item["correction"]
        if len(values) != len(views) or any(tuple(a.shape) != tuple(b.shape)
                                            for a, b in zip(values, views)):
            raise ValueError(f"the saved correction of the overlapped reduction of {self.name} "
                             f"has {len(values)} tensors of other shapes than this optimizer's "
                             "averaged tensors")
        with torch.no_grad():
            for a, b in zip(views, values):
                a.copy_(b)
        self.in_flight.append(InFlight(self.index, int(item["start"]), int(item["due"]),
                                       bool(item["dropped"]), correction=views))

    # -- state ----------------------------------------------------------------------------
    def state_dict(self, residuals: bool = True) -> Optional[dict]:
        """The anchor, the outer optimizer's state and (unless ``residuals=False``) this
        rank's error residuals; None for a level without anchor."""
        if self.anchor is None:
            return None
        return {**self.anchor.state_dict(),
                "compression": None if self.reducer is None or not residuals
                else self.reducer.state_dict()}

    def load_state_dict(self, saved: dict, residuals: bool = True) -> None:
        """Restore ``state_dict()``; ``residuals=False`` keeps this rank's own residuals (the
        state came from another rank)."""
        self.anchor.load_state_dict(saved)
        if self.reducer is not None and residuals:
            self.reducer.load_state_dict(saved.get("compression"))

    def reset(self) -> None:
        """Forget the anchor, the outer state and the residuals (taken afresh after warmup)."""
        if self.anchor is not None:
            self.anchor.reset()
        self.reset_residuals()

    def reset_residuals(self) -> None:
        """Zero this rank's error residuals (an elastic rebuild: the model is rank 0's)."""
        if self.reducer is not None:
            self.reducer.reset_residuals()

    def describe_reduction(self) -> str:
        """What the level's reduction does, in a few words (its strategy's)."""
        return self.strategy.describe()

    def __repr__(self) -> str:
        title = f"{self.name[0].upper()}{self.name[1:]}"
        if self.topology is None:
            return f"{title}: every {self.spec.period} steps, groups not built yet"
        parts = [f"{len(self.topology.group)} ranks", f"every {self.spec.period} steps",
                 self.describe_reduction()]
        if self.anchor is not None and self.anchor.outer is not None:
            parts.append(f"outer {describe_outer(self.anchor.outer)}")
        return f"{title}: {', '.join(parts)}"


def describe_outer(opt: torch.optim.Optimizer) -> str:
    """An outer optimizer in a few words, e.g. ``SGD(lr=0.7, momentum=0.9, nesterov)``."""
    d = opt.defaults
    words = [f"{k}={d[k]:g}" for k in ("lr", "momentum")
             if isinstance(d.get(k), float) or (type(d.get(k)) is int)]
    if d.get("nesterov"):
        words.append("nesterov")
    return f"{type(opt).__name__}({', '.join(words)})"
