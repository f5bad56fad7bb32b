"""Every level's groups of ranks: pure planning, testable without processes.

``plan_level_groups`` fits the levels to a process set (``ValueError`` naming the level when
they cannot fit), ``check_level_sizes`` checks what it can before the hosts are known,
``adapt_level_groups`` is the rule of elastic jobs, whose size changes, ``plan_cross_groups``
pairs the ranks of a two-stage reduction, and ``check_can_create`` says whether a process set
smaller than the job can create the groups' process sets.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from ..config.levels import ALL, LOCAL, Level, at, check_group_size

__all__ = ["by_host", "plan_level_groups", "check_level_sizes", "adapt_level_groups",
           "plan_cross_groups", "check_can_create", "labels_of"]


def by_host(ranks: List[int], hostnames: Optional[Sequence[str]]) -> "OrderedDict[str, List[int]]":
    """The ranks of each host, hosts in order of first appearance."""
    if hostnames is None or len(hostnames) != len(ranks):
        raise ValueError("group_size='local' needs the host name of every rank")
    out: "OrderedDict[str, List[int]]" = OrderedDict()
    for rank, host in zip(ranks, hostnames):
        out.setdefault(host, []).append(rank)
    return out


def _groups_of(where: str, size, ranks: List[int], hosts: Optional[Sequence[str]]):
    n = len(ranks)
    if size == ALL:
        return [list(ranks)]
    if size == LOCAL:
        per_host = by_host(ranks, hosts)
        counts = {h: len(m) for h, m in per_host.items()}
        if len(set(counts.values())) != 1:
            hint = "" if where else f"; pass an integer group_size that divides {n}"
            raise ValueError(at(where, "group_size='local' needs the same number of ranks on "
                                        f"every host, got {counts}{hint}"))
        return list(per_host.values())
    if isinstance(size, tuple):
        inside = sorted(r for g in size for r in g)
        if inside != sorted(ranks):
            missing = sorted(set(ranks) - set(inside))
            extra = sorted(set(inside) - set(ranks))
            what = (f"misses ranks {missing}" if missing else "") + \
                   (" and " if missing and extra else "") + \
                   (f"names ranks {extra} outside it" if extra else "")
            raise ValueError(at(where, f"the groups {[list(g) for g in size]} must partition "
                                        f"the process set {ranks}, but {what}"))
        return [list(g) for g in size]
    try:
        check_group_size(size, n)
    except ValueError as exc:
        raise ValueError(at(where, str(exc))) from None
    return [ranks[i:i + size] for i in range(0, n, size)]


def _check_nested(levels_groups: List[List[List[int]]]) -> None:
    for i in range(1, len(levels_groups)):
        owner = {r: j for j, g in enumerate(levels_groups[i]) for r in g}
        for g in levels_groups[i - 1]:
            if len({owner[r] for r in g}) > 1:
                raise ValueError(
                    f"the groups of levels[{i}] ({levels_groups[i]}) are not unions of the groups "
                    f"of levels[{i - 1}] ({levels_groups[i - 1]}): group {g} of levels[{i - 1}] is "
                    f"split; each level's groups must be made of whole groups of the level below")


def labels_of(levels, labels) -> List[str]:
    return [f"levels[{i}]" for i in range(len(levels))] if labels is None else list(labels)


def plan_level_groups(ranks: Sequence[int], levels: Sequence[Level],
                      hosts: Optional[Sequence[str]] = None,
                      labels: Optional[Sequence[str]] = None) -> List[List[List[int]]]:
    """Each level's groups over ``ranks`` (a process set's global ranks, in order;
    ``hosts[i]`` is the host of ``ranks[i]``): ``ValueError`` naming the level when a size
    does not fit, the outermost level does not span the set, or the levels are not nested.
    ``labels`` name the levels in messages (default ``levels[i]``; ``""``: no name)."""
    ranks = list(ranks)
    names = labels_of(levels, labels)
    out = [_groups_of(names[i], lv.group_size, ranks, hosts) for i, lv in enumerate(levels)]
    if len(out[-1]) != 1:
        raise ValueError(f"levels[{len(out) - 1}], the outermost level, must span the whole process "
                         f"set of {len(ranks)} ranks, got groups {out[-1]}")
    _check_nested(out)
    return out


def check_level_sizes(ranks: Sequence[int], levels: Sequence[Level],
                      labels: Optional[Sequence[str]] = None) -> None:
    """What can be checked of the levels' groups before the hosts are known (before any
    collective): every level but the ``"local"`` ones must fit ``ranks``, the outermost must
    span them, and without a ``"local"`` level the groups must nest."""
    ranks = list(ranks)
    if not any(lv.group_size == LOCAL for lv in levels):
        plan_level_groups(ranks, levels, labels=labels)
        return
    names = labels_of(levels, labels)
    for i, lv in enumerate(levels):
        if lv.group_size != LOCAL:
            groups = _groups_of(names[i], lv.group_size, ranks, None)
            if i == len(levels) - 1 and len(groups) != 1:
                raise ValueError(f"levels[{i}], the outermost level, must span the whole process "
                                 f"set of {len(ranks)} ranks, got groups {groups}")


def adapt_level_groups(ranks: Sequence[int], levels: Sequence[Level],
                       hosts: Optional[Sequence[str]] = None,
                       labels: Optional[Sequence[str]] = None) -> Tuple[List[List[List[int]]], List[str]]:
    """The levels' groups in an elastic job, whose size changes: ``(groups per level, notes)``.

    Where ``plan_level_groups`` would refuse the new size, a rule applies, level by level
    from the innermost, and each note says what it did: an integer group size becomes the
    largest divisor of the number of ranks that is not above it and is a multiple of the
    fitted size of the level below (when that is an integer too), so that blocks stay nested;
    ``"local"`` keeps one group per host even when the hosts hold different numbers of
    ranks; the outermost level spans every rank. Finally each level's groups are cut along
    the groups of the level above (outermost inward), which keeps them nested whatever the
    hosts. Explicit rank lists cannot follow a changing job and are refused. ``labels`` name
    the levels in the notes (default ``levels[i]``; ``""`` for none, as the two-level
    shorthand's notes have).
    """
    ranks = list(ranks)
    labels = labels_of(levels, labels)
    prefixes = [f"{label}: " if label else "" for label in labels]
    notes: List[str] = []
    out: List[List[List[int]]] = []
    inner_size: Optional[int] = None
    for i, lv in enumerate(levels):
        size = ALL if i == len(levels) - 1 else lv.group_size
        if isinstance(size, tuple):
            raise ValueError(f"levels[{i}]: explicit rank lists cannot follow an elastic job's "
                             "changing ranks; use an integer group_size, 'local' or 'all'")
        groups, inner_size, note = _fit_level(ranks, size, inner_size, hosts)
        out.append(groups)
        if note:
            notes.append(prefixes[i] + note)
    for i in range(len(out) - 2, -1, -1):  # cut each level along the one above
        pieces = _cut_along(out[i], out[i + 1])
        if len(pieces) != len(out[i]):
            notes.append(f"{prefixes[i]}groups cut along those of "
                         f"{labels[i + 1] or 'the level above'} to stay nested: {pieces}")
        out[i] = pieces
    return out, notes


def _fit_level(ranks: List[int], size, inner_size: Optional[int],
               hosts: Optional[Sequence[str]]):
    """One level's groups under the elastic rule: ``(groups, fitted size or None, note)``
    (``inner_size``: the fitted size of the level below, None for "local")."""
    n = len(ranks)
    if size == ALL:
        return [list(ranks)], n, None
    if size == LOCAL:
        per_host = by_host(ranks, hosts)
        counts = {h: len(m) for h, m in per_host.items()}
        note = None
        if len(set(counts.values())) != 1:
            note = (f"the hosts hold different numbers of ranks ({counts}); each host stays "
                    "one local group")
        return list(per_host.values()), None, note
    step = inner_size if inner_size is not None and inner_size <= n else 1
    candidates = [d for d in range(1, min(size, n) + 1) if n % d == 0 and d % step == 0]
    fitted = max(candidates) if candidates else step
    note = None
    if fitted != size:
        why = "is larger than" if size > n else "does not divide"
        multiple = f" that is a multiple of {step}" if step > 1 else ""
        note = (f"group_size={size} {why} the {n} rank{'s' if n != 1 else ''}; using groups of "
                f"{fitted}, the largest divisor of {n} not above {size}{multiple}")
    return [ranks[k:k + fitted] for k in range(0, n, fitted)], fitted, note


def _cut_along(groups: List[List[int]], above: List[List[int]]) -> List[List[int]]:
    """``groups`` cut where they straddle two groups of ``above`` (kept in order)."""
    owner = {r: j for j, g in enumerate(above) for r in g}
    cut: Dict[Tuple[int, int], List[int]] = {}
    for k, g in enumerate(groups):
        for r in g:
            cut.setdefault((k, owner[r]), []).append(r)
    return list(cut.values())


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
