"""The Horovod process sets of every level's groups, and this rank's place in them
(``LevelTopology``, one per level, which the level keeps). Every rank builds them identically, in the same order (Horovod's rule for
adding process sets); the groups themselves are planned by ``hvd_hier.topology.groups``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import horovod.torch as hvd

from ..comm.horovod_api import process_set_table
from .groups import check_can_create, plan_cross_groups

__all__ = ["process_set_for", "LevelTopology", "Topology", "build_topology"]

_DYNAMIC_HINT = (
    "hvd_hier builds its local groups as Horovod process sets, which needs dynamic process "
    "sets. Import hvd_hier before calling hvd.init() (it then enables them), or call "
    "hvd.init(process_sets='dynamic'), or set HOROVOD_DYNAMIC_PROCESS_SETS=1 in the "
    "environment of every rank."
)


def process_set_for(ranks: Sequence[int]):
    """The Horovod process set of exactly ``ranks``: the existing one, or a new one.

    Must be called by every rank, in the same order, for the same ranks (Horovod's rule for
    adding process sets).
    """
    ranks = tuple(sorted(ranks))
    existing = process_set_table()
    if ranks in existing:
        if existing[ranks] == 0:
            return hvd.global_process_set
        ps = hvd.ProcessSet(list(ranks))
        ps.process_set_id = existing[ranks]
        return ps
    try:
        return hvd.add_process_set(list(ranks))
    except ValueError as exc:
        if "HOROVOD_DYNAMIC_PROCESS_SETS" in str(exc):
            raise RuntimeError(_DYNAMIC_HINT) from exc
        raise


@dataclass
class LevelTopology:
    """One averaging level's groups and this rank's place in them.

    A level whose groups are each made of k >= 2 groups of the level below, all of one size
    S >= 2, can reduce in two stages (``plan_cross_groups``): its cross groups gather the
    ranks at one position of their lower group, one per lower group."""

    groups: List[List[int]]  #: the level's groups, each a list of global ranks
    group: List[int]  #: this rank's group
    process_set: object  #: process set of this rank's group (None when it is one rank)
    cross_groups: Optional[List[List[int]]] = None  #: None: no two-stage reduction
    cross_group: Optional[List[int]] = None  #: this rank's cross group
    cross_set: object = None  #: its process set
    share: int = 0  #: this rank's position in its lower group (which pieces it reduces)
    shares: int = 1  #: S, the size of the lower groups


@dataclass
class Topology:
    """The optimizer's process set as the job has it now (each level's groups are its
    ``LevelTopology``, which the level keeps)."""

    set_ranks: List[int]  #: global ranks of the optimizer's process set
    global_set: object  #: the optimizer's process set


def build_topology(set_ranks, level_groups, process_set, rank: int,
                   world_size: int) -> Tuple[Topology, List[LevelTopology]]:
    """Create (or find) the process sets of every level's groups (``level_groups``: one list
    of groups per level, innermost first), and of the cross groups of every level that can
    reduce in two stages (``plan_cross_groups``); every rank calls it identically. Returns
    the set and one ``LevelTopology`` per level, innermost first."""
    existing = set(process_set_table())
    cross = [None] + [plan_cross_groups(level_groups[i], level_groups[i - 1])
                      for i in range(1, len(level_groups))]
    for i, groups in enumerate(level_groups):
        check_can_create(groups, existing, world_size)
        if cross[i] is not None and len(set_ranks) != world_size and any(
                tuple(sorted(g)) not in existing for g in cross[i]):
            cross[i] = None  # a subset of the job cannot create them: one stage
    levels = []
    for i, groups in enumerate(level_groups):
        my_group = next(g for g in groups if rank in g)
        ps = None
        if len(groups) == 1:
            ps = process_set  # one group: the whole set
        else:
            for g in groups:  # every rank adds every group of 2 or more, in the same order
                found = process_set_for(g) if len(g) > 1 else None
                if g is my_group:
                    ps = found
        lt = LevelTopology([list(g) for g in groups], list(my_group), ps)
        if cross[i] is not None:
            lower = next(sorted(g) for g in level_groups[i - 1] if rank in g)
            lt.cross_groups = cross[i]
            for g in cross[i]:
                found = process_set_for(g)
                if rank in g:
                    lt.cross_group, lt.cross_set = list(g), found
            lt.share, lt.shares = lower.index(rank), len(lower)
        levels.append(lt)
    return Topology(list(set_ranks), process_set), levels
