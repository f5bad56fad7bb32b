"""A level reduced in fragments, ``Level(..., fragments=F)`` (Streaming DiLoCo): no reduction
carries more than about 1/F of the model across the level's link.

The split (``plan_fragments``): the tensors, largest first (in order among equals), each
join the fragment that holds the fewest bytes so far (the first such on a tie). The fragments'
sizes then differ by at most the smallest tensor that tipped the balance (ResNet-18 in 4:
11.8, 11.0, 11.0 and 11.0 MB, where taking the tensors in order gave 13.1 MB at most), and
layers of one shape (a transformer's blocks) go round the fragments in turn: strided, which
the Streaming DiLoCo paper found slightly better than contiguous blocks.

Each fragment is a ``LevelRuntime`` of its own over its tensors: its averager, anchor, outer
optimizer (over its parameters), codec and residuals, the strategy it chose as any level
does, and its reductions in flight, in a list the fragments share with the level. They share
the level's groups and statistics. At fragment f's step (``HierSchedule.fragment_at``) the
level below first averages the whole model (its immediate strategy, as if due), then
fragment f reduces over the level's groups, its strategy told that the level below is done
(``Context.lower_done``): in one stage or two, compressed or not, overlapped or not.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence

from .level import LevelRuntime

__all__ = ["plan_fragments", "FragmentAnchors", "FragmentedLevel"]


def plan_fragments(sizes: Sequence[int], count: int) -> List[List[int]]:
    """The positions of the tensors of each of ``count`` fragments, for tensors of ``sizes``
    bytes (see the module's docstring); positions ascending within a fragment."""
    loads, out = [0] * count, [[] for _ in range(count)]
    for i in sorted(range(len(sizes)), key=lambda j: (-sizes[j], j)):
        f = min(range(count), key=lambda k: (loads[k], k))
        out[f].append(i)
        loads[f] += sizes[i]
    return [sorted(part) for part in out]


class FragmentAnchors:
    """The fragments' anchors, as the optimizer and the agreement see a level's anchor:
    taken (all of them) and taken again."""

    def __init__(self, parts: Sequence[LevelRuntime]):
        self.anchors = [p.anchor for p in parts if p.anchor is not None]

    @property
    def taken(self) -> bool:
        return all(a.taken for a in self.anchors)

    @property
    def outer(self):
        """The first fragment's outer optimizer (each fragment has its own, alike)."""
        return next((a.outer for a in self.anchors if a.outer is not None), None)

    def take(self) -> None:
        for a in self.anchors:
            a.take()


class FragmentedLevel(LevelRuntime):
    """The outermost level with ``fragments=F`` (see the module's docstring): ``parts`` are
    its fragments' runtimes, ``schedule`` says which one reduces at a step."""

    def __init__(self, index: int, spec, name: str, tensors, ctx, below,
                 parts: Sequence[LevelRuntime], schedule):
        super().__init__(index, spec, name, tensors, ctx, below)
        self.parts, self.schedule = list(parts), schedule
        for part in self.parts:
            part.stats, part.in_flight = self.stats, self.in_flight
        if any(p.anchor is not None for p in self.parts):
            self.anchor = FragmentAnchors(self.parts)

    def bind(self, topology) -> None:
        self.topology = topology
        for part in self.parts:
            part.bind(topology)

    def reduce(self, t: int, deadline: Optional[float]):
        """The level below averages the whole model, then the fragment due reduces."""
        if self.below:
            self.below[-1].immediate.start(t, deadline)
        return self.parts[self.schedule.fragment_at(t)].reduce(t, deadline)

    def describe_reduction(self) -> str:
        step = self.spec.period // len(self.parts)
        return (f"{len(self.parts)} fragments, one every {step} steps, "
                f"{self.parts[0].describe_reduction()}")

    # -- the reductions in flight (one list, the fragments') --------------------------------
    def part_of(self, red) -> LevelRuntime:
        """The fragment that started ``red``."""
        return self.parts[self.schedule.fragment_at(red.start)]

    def progress(self, submit: bool) -> None:
        for red in self.in_flight:
            self.part_of(red).strategy.poll(red, submit)

    def complete(self, red, deadline: Optional[float]) -> None:
        self.part_of(red).complete(red, deadline)

    def settle(self, deadline: Optional[float]) -> None:
        for red in list(self.in_flight):
            self.part_of(red).strategy.finish(red, deadline)

    def restore(self, item: Dict[str, object]) -> None:
        self.parts[self.schedule.fragment_at(int(item["start"]))].restore(item)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self, residuals: bool = True) -> Optional[dict]:
        """Every fragment's anchor, outer state and residuals; None without anchors."""
        if self.anchor is None:
            return None
        return {"taken": self.anchor.taken,
                "fragments": [p.state_dict(residuals) for p in self.parts]}

    def load_state_dict(self, saved: dict, residuals: bool = True) -> None:
        """Restore ``state_dict()``; a state of another split (or none) takes the anchors
        afresh at the next step, with a warning."""
        parts = saved.get("fragments")
        if parts is None or len(parts) != len(self.parts):
            warnings.warn(f"hvd_hier: the saved state of {self.name} is not one of "
                          f"{len(self.parts)} fragments; its anchors are taken afresh at the "
                          "next step after warmup")
            self.reset()
            return
        for part, state in zip(self.parts, parts):
            part.load_state_dict(state, residuals)

    def reset(self) -> None:
        for part in self.parts:
            part.reset()

    def reset_residuals(self) -> None:
        for part in self.parts:
            part.reset_residuals()
