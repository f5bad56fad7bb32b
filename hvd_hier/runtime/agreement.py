"""The ranks' agreement, and the elastic rebuild, in one place.

* ``setup``: fit the optimizer to the job as Horovod now sees it (one allgather of every
  rank's configuration, tensors, host and schedule position; ``ValueError`` on every rank if
  they disagree), then every level's groups and process sets. Run at construction, and in
  elastic jobs at the first step and after every reset.
* ``agree``: at the first step, the schedule position, the anchors and outer state and the
  pending corrections of overlapped reductions come from the first rank of the process set
  (so that a checkpoint loaded there, then broadcast, resumes every rank); after an elastic
  reset (Horovod initialised again), ``rebuild`` makes the groups anew first.
"""

from __future__ import annotations

import logging
import warnings
from typing import List, Optional

import torch

import horovod.torch as hvd

from ..comm import horovod_api
from ..comm.collectives import allgather_object, broadcast_object, cpu_copy, wait
from ..config.options import check_tensors
from ..persist.state import corrections, restore_corrections
from ..topology.groups import adapt_level_groups, check_level_sizes, plan_level_groups
from ..topology.process_sets import build_topology
from .stalls import deadline, guard

__all__ = ["check_agreement", "setup", "bind", "agree", "rebuild"]

log = logging.getLogger("hvd_hier")


def _describe(sig) -> str:
    shape, dtype, stride, device = sig
    return f"shape {tuple(shape)}, {dtype}, strides {tuple(stride)} on {device}"


def check_agreement(payloads: list, set_ranks: List[int], names: List[str]) -> None:
    """Raise the same ValueError on every rank if the ranks' configurations differ."""
    ref = payloads[0]
    for rank, other in zip(set_ranks[1:], payloads[1:]):
        for key, value in ref["config"].items():
            if other["config"][key] != value:
                raise ValueError(
                    f"hvd_hier.DistributedOptimizer: ranks disagree on {key}: rank "
                    f"{set_ranks[0]} has {value!r}, rank {rank} has {other['config'][key]!r}; "
                    "every rank must pass the same arguments"
                )
        for what in ("params", "buffers"):
            mine, theirs = ref[what], other[what]
            if len(mine) != len(theirs):
                raise ValueError(
                    f"hvd_hier.DistributedOptimizer: ranks disagree on the {what}: rank "
                    f"{set_ranks[0]} has {len(mine)} tensors, rank {rank} has {len(theirs)}"
                )
            for i, (a, b) in enumerate(zip(mine, theirs)):
                if a != b:
                    label = names[i] if what == "params" else f"buffer {i}"
                    raise ValueError(
                        f"hvd_hier.DistributedOptimizer: ranks disagree on {label}: rank "
                        f"{set_ranks[0]} has {_describe(a)}, rank {rank} has {_describe(b)}; "
                        "every rank must build the same model in the same order"
                    )


def setup(state, until: Optional[float] = None):
    """Fit the optimizer to the job as Horovod now sees it: ``(topology, level topologies,
    payloads, notes)``.

    Every rank of the process set calls it at the same point: at construction, or (elastic
    jobs, and after Horovod was initialised again) at the first step. Checks that need no
    other rank come first and raise on every rank before any collective; then one allgather
    tells every rank the others' configuration, tensors, host and schedule position (the
    ranks must agree; ``StallError`` past ``until``), and every level's process sets are
    created. ``notes`` say how an elastic job's groups differ from the levels' group sizes
    (``adapt_level_groups``).
    """
    set_ranks = _set_ranks(state.process_set)
    elastic, config = horovod_api.elastic_job(), state.config
    names = ["" for _ in config.levels] if config.shorthand else None  # the shorthand names none
    if not elastic:  # sizes that cannot fit fail here, before any collective
        check_level_sizes(set_ranks, config.levels, names)
    check_tensors(state.tensors.all, state.tensors.labels)
    payload = _payload(state, set_ranks)
    payloads = ([payload] if len(set_ranks) == 1 else
                allgather_object(payload, state.process_set, deadline=until))
    check_agreement(payloads, set_ranks, state.tensors.labels[:len(state.tensors.params)])
    hosts = [p["host"] for p in payloads]
    notes: List[str] = []
    if elastic:
        level_groups, notes = adapt_level_groups(set_ranks, config.levels, hosts, names)
    else:
        level_groups = plan_level_groups(set_ranks, config.levels, hosts, names)
    topology, levels = build_topology(set_ranks, level_groups, state.process_set, hvd.rank(),
                                      hvd.size())
    return topology, levels, payloads, notes


def _set_ranks(process_set) -> List[int]:
    """The global ranks of ``process_set``; ``ValueError`` if this rank is not one of them."""
    set_ranks = list(range(hvd.size())) if process_set.process_set_id == 0 else list(
        process_set.ranks)
    if hvd.rank() not in set_ranks:
        raise ValueError(
            f"process_set {set_ranks} does not include this rank ({hvd.rank()}); create the "
            "optimizer only on the ranks of process_set")
    return set_ranks


def _signature(t):
    return (tuple(t.shape), str(t.dtype), tuple(t.stride()), t.device.type)


def _payload(state, set_ranks: List[int]) -> dict:
    """What this rank tells the others: configuration, tensors, host and schedule position."""
    tensors, n = state.tensors.all, len(state.tensors.params)
    return {"config": dict(state.config.agreement(), process_set=set_ranks),
            "params": [_signature(t) for t in tensors[:n]],
            "buffers": [_signature(t) for t in tensors[n:]], "host": horovod_api.hostname(),
            "t": state.position.t}


def bind(h, topology, level_topologies) -> None:
    """The job as it is now: the optimizer takes ``topology``, each level its
    ``LevelTopology`` (and chooses its strategy)."""
    h.topology, h.position.generation = topology, horovod_api.generation()
    for level, lt in zip(h.levels, level_topologies):
        level.bind(lt)


def agree(opt) -> None:
    """At the first step: take the schedule position of the process set's first rank, with
    the anchors and corrections that go with it (see the module's docstring). If Horovod was
    initialised again since the groups were built (an elastic reset), or they were never
    built (an elastic job's first step), the groups are rebuilt first (``rebuild``)."""
    h = opt.hier_state()
    pos = h.position
    if pos.generation is not horovod_api.generation():
        rebuild(opt)
        return
    if pos.agreed:
        return
    topo = h.topology
    if len(topo.set_ranks) > 1:
        mine = torch.tensor([pos.t], dtype=torch.int64)
        with guard(h.config, f"the agreement on the schedule position (step {pos.t})",
                   topo.set_ranks):
            handle = hvd.broadcast_async(mine, root_rank=topo.set_ranks[0],
                                         name="hvd_hier.schedule", process_set=topo.global_set)
            root = wait(handle, deadline(h.config))
        _adopt(h, int(root.item()), topo.set_ranks[0])
        _agree_anchors(h, per_group=True)
        _agree_corrections(h, per_group=True)
    pos.agreed = True
    _log_levels(h)


def rebuild(opt) -> None:
    """Build the groups for the job as it is now (``setup``), agree on the schedule position,
    the anchors and the pending corrections (all rank 0's); on the first rank, log what
    changed."""
    h = opt.hier_state()
    before = h.topology
    # Reductions still running belong to the job before the reset: their collectives end
    # with an error there. The corrections that are pending come from rank 0 below.
    for level in h.levels:
        level.discard(running_only=True, finish_running=False)
    with guard(h.config, f"the setup of the local groups at step {h.position.t}",
               list(range(hvd.size()))):
        topo, level_topologies, payloads, notes = setup(h, deadline(h.config))
    bind(h, topo, level_topologies)
    _adopt(h, payloads[0]["t"], topo.set_ranks[0])
    for level in h.levels:  # what this rank's codecs lost belongs to the model it had
        level.reset_residuals()
    _agree_anchors(h, per_group=False)
    _agree_corrections(h, per_group=False)
    h.position.agreed = True
    horovod_api.forget_pending(opt)  # handles of the old Horovod instance never complete
    if hvd.rank() == topo.set_ranks[0]:
        _log_rebuild(h, before, notes)


def _log_rebuild(h, before, notes: List[str]) -> None:
    topo, s, t = h.topology, h.config.schedule, h.position.t
    if h.config.shorthand:
        where = (f"{len(topo.set_ranks)} ranks in local groups {h.levels[0].topology.groups}; "
                 "the schedule "
                 f"continues at step {t} (K1={s.local_steps}, K2={s.local_rounds}, "
                 f"warmup {s.warmup_steps})")
    else:
        groups = [lv.topology.groups for lv in h.levels]
        where = (f"{len(topo.set_ranks)} ranks in levels {groups}; "
                 f"the schedule continues at step {t} (periods {list(s.periods)}, warmup "
                 f"{s.warmup_steps})")
    for line in notes:
        log.warning("hvd_hier: %s", line)
    if before is None:
        log.info("hvd_hier: %s", where)
        _log_levels(h)
    else:
        log.warning("hvd_hier: Horovod was initialised again (elastic reset): %d ranks "
                    "before, %s", len(before.set_ranks), where)


def _log_levels(h) -> None:
    """On the first rank: what each level will do (its ``repr``), once."""
    if hvd.rank() != h.topology.set_ranks[0] or h.levels_logged:
        return
    h.levels_logged = True
    for level in h.levels:
        log.info("hvd_hier: %r", level)


def _adopt(h, t: int, root: int) -> None:
    pos = h.position
    if t != pos.t and pos.t != 0:
        warnings.warn(
            f"hvd_hier: this rank's schedule was at step {pos.t}, rank {root}'s at step "
            f"{t}; continuing from step {t}")
    pos.t = t


def _agree_anchors(h, per_group: bool) -> None:
    """Make every group's anchors and outer optimizers' state agree (first step, elastic
    rebuild): first every rank receives the set's first rank's (a checkpoint loaded there,
    or an elastic job's restored state, which goes with the model it broadcast); then, with
    ``per_group``, each group of a level takes its first rank's own state if that rank has
    one (every rank loaded its checkpoint), else the one just received. Residuals stay this
    rank's own (``rebuild`` zeroes them: the model is rank 0's now)."""
    topo = h.topology
    anchored = [lv for lv in h.levels if lv.anchor is not None]
    if not anchored or len(topo.set_ranks) == 1:
        return
    mine = {lv.index: cpu_copy(lv.state_dict(residuals=False)) for lv in anchored}
    with guard(h.config, f"the agreement on the outer optimizers' state (step "
                         f"{h.position.t})", topo.set_ranks):
        chosen = dict(broadcast_object(mine, topo.set_ranks[0], topo.global_set,
                                       "hvd_hier.anchors", deadline(h.config)))
        if per_group:
            for lv in anchored:
                chosen[lv.index] = _group_choice(h, lv, mine[lv.index], chosen[lv.index])
    for lv in anchored:
        if chosen[lv.index] is not mine[lv.index]:  # another rank's state
            lv.load_state_dict(chosen[lv.index], residuals=False)


def _group_choice(h, lv, mine: dict, received: dict) -> dict:
    """The state a group of level ``lv`` takes: its first rank's own, if it has one, else
    the set's first rank's (``received``)."""
    group, topo = lv.topology.group, h.topology
    if list(group) == list(topo.set_ranks):
        return received
    own = mine if mine["taken"] else received
    if len(group) == 1:
        return own
    return broadcast_object(own, group[0], lv.topology.process_set,
                            f"hvd_hier.anchors.{lv.index}", deadline(h.config))


def _agree_corrections(h, per_group: bool) -> None:
    """The pending corrections of overlapped reductions (restored from a checkpoint) agree
    like the anchors: every rank takes the set's first rank's, except that with
    ``per_group`` a rank that loaded its own keeps them."""
    topo = h.topology
    if len(topo.set_ranks) == 1 or not any(lv.overlap_steps for lv in h.levels):
        return
    mine = corrections(h)
    with guard(h.config, f"the agreement on the overlapped reductions (step "
                         f"{h.position.t})", topo.set_ranks):
        root = broadcast_object(mine, topo.set_ranks[0], topo.global_set, "hvd_hier.overlap",
                                deadline(h.config))
    if root is not mine and not (per_group and mine):
        restore_corrections(h, root)
