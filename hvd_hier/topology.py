"""Local groups: which ranks average together, and the Horovod process sets that do it.

``plan_groups`` and ``adapt_groups`` (the rule of elastic jobs) are pure, testable without
processes; ``process_set_for`` and ``build_topology`` talk to Horovod.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Optional, Sequence

from .schedule import check_int

__all__ = ["check_group_size", "plan_groups", "adapt_groups", "check_can_create", "Topology",
           "LevelTopology", "plan_cross_groups", "build_topology", "process_set_for"]

LOCAL = "local"


def check_group_size(group_size, set_size: Optional[int] = None):
    """Validate ``group_size`` against a process set of ``set_size`` ranks.

    Returns ``"local"`` or the group size as an int; raises ``ValueError`` naming the value.
    With ``set_size=None`` only the kind of value is checked (elastic jobs, whose size
    changes, fit the groups to each new size with ``adapt_groups``).
    """
    if isinstance(group_size, str):
        if group_size != LOCAL:
            raise ValueError(
                f"group_size must be an integer >= 1 or 'local', got {group_size!r}"
            )
        return LOCAL
    if isinstance(group_size, bool):
        raise ValueError(f"group_size must be an integer >= 1 or 'local', got {group_size!r}")
    try:
        size = check_int("group_size", group_size, 1)
    except ValueError:
        raise ValueError(
            f"group_size must be an integer >= 1 or 'local', got {group_size!r}"
        ) from None
    if set_size is None:
        return size
    if size > set_size:
        raise ValueError(
            f"group_size={size} is larger than process_set, which has {set_size} ranks"
        )
    if set_size % size != 0:
        raise ValueError(
            f"group_size={size} does not divide the {set_size} ranks of process_set; "
            f"pick a divisor of {set_size} or group_size='local'"
        )
    return size


def _by_host(ranks: List[int], hostnames: Optional[Sequence[str]]) -> "OrderedDict[str, List[int]]":
    """The ranks of each host, hosts in order of first appearance."""
    if hostnames is None or len(hostnames) != len(ranks):
        raise ValueError("group_size='local' needs the host name of every rank")
    by_host: "OrderedDict[str, List[int]]" = OrderedDict()
    for rank, host in zip(ranks, hostnames):
        by_host.setdefault(host, []).append(rank)
    return by_host


def plan_groups(ranks: Sequence[int], group_size, hostnames: Optional[Sequence[str]] = None):
    """Split ``ranks`` (a process set's global ranks, in order) into local groups.

    An integer ``group_size`` makes contiguous blocks of that many ranks, in rank order.
    ``"local"`` puts the ranks that share a host together (``hostnames[i]`` is the host of
    ``ranks[i]``), in order of first appearance; every host must hold the same number of
    ranks.
    """
    ranks = list(ranks)
    size = check_group_size(group_size, len(ranks))
    if size != LOCAL:
        return [ranks[i : i + size] for i in range(0, len(ranks), size)]
    by_host = _by_host(ranks, hostnames)
    counts = {host: len(members) for host, members in by_host.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(
            "group_size='local' needs the same number of ranks on every host, got "
            f"{counts}; pass an integer group_size that divides {len(ranks)}"
        )
    return list(by_host.values())


def adapt_groups(ranks: Sequence[int], group_size, hostnames: Optional[Sequence[str]] = None):
    """The local groups of an elastic job, whose size changes: ``(groups, note)``.

    Where ``plan_groups`` would refuse the new size, a rule applies instead, and ``note`` says
    what it did (None when the groups are those asked for):

    * an integer ``group_size`` that does not divide the number of ranks P is lowered to the
      largest divisor of P not above it (S=4 on 6 ranks: groups of 3; on 2 ranks: one group
      of 2; on 5 ranks: groups of 1, i.e. K-AVG);
    * ``"local"`` keeps one group per host even when the hosts now hold different numbers of
      ranks (a local average is over the ranks present; the global one weighs every rank
      alike).
    """
    ranks = list(ranks)
    size = check_group_size(group_size)
    n = len(ranks)
    if size == LOCAL:
        by_host = _by_host(ranks, hostnames)
        counts = {host: len(members) for host, members in by_host.items()}
        note = None
        if len(set(counts.values())) != 1:
            note = (f"the hosts hold different numbers of ranks ({counts}); each host stays "
                    "one local group")
        return list(by_host.values()), note
    fitted = max(d for d in range(1, min(size, n) + 1) if n % d == 0)
    note = None
    if fitted != size:
        why = "is larger than" if size > n else "does not divide"
        ranks_n = f"{n} rank" if n == 1 else f"{n} ranks"
        note = (f"group_size={size} {why} the {ranks_n}; using groups of {fitted}, the "
                f"largest divisor of {n} not above {size}")
    return [ranks[i : i + fitted] for i in range(0, n, fitted)], note


def _horovod_sets():
    """Horovod's table of process sets: {tuple(ranks): id}."""
    from ._horovod import process_set_table

    return process_set_table()


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
    import horovod.torch as hvd

    ranks = tuple(sorted(ranks))
    existing = _horovod_sets()
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
    """The groups of one optimizer, level by level (innermost first), and this rank's place."""

    set_ranks: List[int]  #: global ranks of the optimizer's process set
    levels: List[LevelTopology]  #: one per level, innermost first; the last spans set_ranks
    global_set: object  #: the optimizer's process set

    # The two-level view: the innermost level is the "local" one.
    @property
    def groups(self) -> List[List[int]]:
        return self.levels[0].groups

    @property
    def group(self) -> List[int]:
        return self.levels[0].group

    @property
    def local_set(self):
        return self.levels[0].process_set

    @property
    def group_size(self) -> int:
        return len(self.group)


def check_can_create(groups, existing, world_size: int) -> None:
    """Raise if ``groups`` need new process sets that this process set cannot create.

    Horovod adds a process set only when every rank of the job calls ``add_process_set``;
    when the optimizer's process set is a subset of the job, its ranks alone cannot, so the
    groups must exist already (``existing``: the ranks tuples Horovod knows).
    """
    members = sorted(r for g in groups for r in g)
    if len(members) == world_size or len(groups) == 1:
        return
    missing = [g for g in groups if len(g) > 1 and tuple(sorted(g)) not in existing]
    if missing:
        calls = "; ".join(f"hvd.add_process_set({g})" for g in missing)
        raise ValueError(
            f"process_set {members} is smaller than the job ({world_size} ranks), so the local "
            "groups cannot be created by its ranks alone (Horovod adds a process set only when "
            f"every rank calls add_process_set). Create them first on every rank: {calls}")


def plan_cross_groups(groups: Sequence[Sequence[int]],
                      lower: Sequence[Sequence[int]]) -> Optional[List[List[int]]]:
    """The cross groups of a level (``groups``) over the level below (``lower``): for each of
    its groups, made of lower groups g_1 .. g_k (ordered by their first rank, each sorted),
    the S groups [g_1[j], ..., g_k[j]], j < S. None unless every group of the level is made of
    k >= 2 lower groups of one size S >= 2 (then a two-stage reduction saves nothing, or
    cannot pair the ranks).

    Example::

        >>> plan_cross_groups([[0, 1, 2, 3]], [[0, 1], [2, 3]])
        [[0, 2], [1, 3]]
    """
    out: List[List[int]] = []
    sizes = set()
    for g in groups:
        members = set(g)
        inside = sorted(sorted(lg) for lg in lower if set(lg) <= members)
        if len(inside) < 2 or sum(len(lg) for lg in inside) != len(members):
            return None
        sizes.update(len(lg) for lg in inside)
        if len(sizes) != 1 or min(sizes) < 2:
            return None
        out.extend([lg[j] for lg in inside] for j in range(len(inside[0])))
    return out


def build_topology(set_ranks, level_groups, process_set, rank: int, world_size: int) -> Topology:
    """Create (or find) the process sets of every level's groups (``level_groups``: one list
    of groups per level, innermost first), and of the cross groups of every level that can
    reduce in two stages (``plan_cross_groups``); every rank calls it identically."""
    existing = set(_horovod_sets())
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
    return Topology(list(set_ranks), levels, process_set)
