"""The methods of hvd_hier's optimizer, laid over Horovod's ``_DistributedOptimizer`` by the
factory (``factory.py``): the schedule position and its agreement, the warmup's gradient
reduction, ``step()`` with the averaging of the level that is due, the non-finite check,
stall timeouts, statistics and ``state_dict``."""

from __future__ import annotations

import logging
import time
import warnings
from typing import Dict, Optional

import torch

import horovod.torch as hvd
from horovod.torch.mpi_ops import Average
from . import _horovod as _hvd_private
from ._horovod import DistributedOptimizerBase as _DistributedOptimizer
from ._horovod import generation as _horovod_generation

from .collectives import NonFiniteError, StallError, broadcast_object, wait
from .jobsetup import setup
from . import overlap
from .reduction import average_level, level_name, take_first_anchors
from .schedule import Reduction
from .state import HierState, Stats

__all__ = ["NonFiniteError", "StallError"]

log = logging.getLogger("hvd_hier")

_STATE_KEY = "hvd_hier"


class _HierAvgOptimizer(torch.optim.Optimizer):
    """Methods laid over Horovod's ``_DistributedOptimizer`` (see ``DistributedOptimizer``)."""

    def __init__(self, params, named_parameters, compression, backward_passes_per_step, op,
                 gradient_predivide_factor, groups, sparse_as_dense, process_set, state):
        # Horovod's constructor: validates named_parameters, registers the gradient hooks
        # used during warmup (gated by _make_hook below).
        self._hier = state
        _DistributedOptimizer.__init__(
            self, params, named_parameters, compression, backward_passes_per_step, op,
            gradient_predivide_factor, groups, sparse_as_dense, process_set)

    # -- the schedule ---------------------------------------------------------------------
    def hier_state(self) -> HierState:
        """hvd_hier's run-time state (``hvd_hier.state.HierState``): configuration, tensors,
        schedule position, topology of every level, averagers, counters. For inspection and
        tests; change it only through the optimizer."""
        return self._hier

    def _hier_next(self) -> Reduction:
        h = self._hier
        return h.config.schedule.reduction_at(h.position.t + 1)

    def _hier_agree(self) -> None:
        """At the first step: take the schedule position of the process set's first rank.

        This makes the usual Horovod pattern (rank 0 loads a checkpoint, then broadcasts)
        resume the schedule on every rank. If Horovod was initialised again since the
        groups were built (an elastic reset), or they were never built (an elastic job's
        first step), the groups are rebuilt first, and the position comes with them.
        """
        pos = self._hier.position
        if pos.generation is not _horovod_generation():
            self._hier_setup_groups()
            return
        if pos.agreed:
            return
        topo = self._hier.topology
        if len(topo.set_ranks) > 1:
            mine = torch.tensor([pos.t], dtype=torch.int64)
            handle = hvd.broadcast_async(mine, root_rank=topo.set_ranks[0],
                                         name="hvd_hier.schedule", process_set=topo.global_set)
            try:
                root = wait(handle, self._hier_deadline())
            except StallError:
                raise self._hier_stalled(
                    f"the agreement on the schedule position (step {pos.t})",
                    topo.set_ranks) from None
            self._hier_adopt(int(root.item()), topo.set_ranks[0])
            self._hier_agree_anchors(per_group=True)
            self._hier_agree_overlap(per_group=True)
        pos.agreed = True

    def _hier_agree_anchors(self, per_group: bool) -> None:
        """Make every group's anchors and outer optimizers' state agree (first step, elastic
        rebuild): first every rank receives the set's first rank's (a checkpoint loaded
        there, or an elastic job's restored state, which goes with the model it broadcast);
        then, with ``per_group``, each group of a level takes its first rank's own state if
        that rank has one (every rank loaded its checkpoint), else the one just received."""
        h = self._hier
        idx = [i for i, a in enumerate(h.anchors) if a is not None]
        topo = h.topology
        if not idx or len(topo.set_ranks) == 1:
            return
        mine = {i: h.anchors[i].portable_state() for i in idx}
        try:
            chosen = dict(broadcast_object(mine, topo.set_ranks[0], topo.global_set,
                                           "hvd_hier.anchors", self._hier_deadline()))
            for i in idx:
                group, ps = topo.levels[i].group, topo.levels[i].process_set
                if not per_group or list(group) == list(topo.set_ranks):
                    continue
                own = mine[i] if mine[i]["taken"] else chosen[i]
                chosen[i] = own if len(group) == 1 else broadcast_object(
                    own, group[0], ps, f"hvd_hier.anchors.{i}", self._hier_deadline())
        except StallError:
            raise self._hier_stalled(f"the agreement on the outer optimizers' state (step "
                                     f"{h.position.t})", topo.set_ranks) from None
        for i in idx:
            if chosen[i] is not mine[i]:  # another rank's state; the residuals stay this rank's
                h.anchors[i].load_state_dict(chosen[i], residuals=False)
            if not per_group and h.anchors[i].reducer is not None:
                h.anchors[i].reducer.reset_residuals()  # the model is rank 0's now

    def _hier_agree_overlap(self, per_group: bool) -> None:
        """The pending corrections of overlapped reductions (restored from a checkpoint)
        agree like the anchors: every rank takes the set's first rank's, except that with
        ``per_group`` a rank that loaded its own keeps them."""
        h = self._hier
        topo = h.topology
        if len(topo.set_ranks) == 1 or not any(
                lv.options.get("overlap_steps") for lv in h.config.levels):
            return
        mine = overlap.portable(h)
        try:
            root = broadcast_object(mine, topo.set_ranks[0], topo.global_set,
                                    "hvd_hier.overlap", self._hier_deadline())
        except StallError:
            raise self._hier_stalled(f"the agreement on the overlapped reductions (step "
                                     f"{h.position.t})", topo.set_ranks) from None
        if root is not mine and not (per_group and mine):
            overlap.restore(h, root)

    def _hier_adopt(self, t: int, root: int) -> None:
        pos = self._hier.position
        if t != pos.t and pos.t != 0:
            warnings.warn(
                f"hvd_hier: this rank's schedule was at step {pos.t}, rank {root}'s at step "
                f"{t}; continuing from step {t}")
        pos.t = t

    def _hier_setup_groups(self) -> None:
        """Build the local groups for the job as it is now (``jobsetup.setup``) and agree on
        the schedule position; on the first rank, log what changed."""
        h = self._hier
        before = h.topology
        # Reductions still running belong to the job before the reset: their collectives end
        # with an error there. The corrections that are pending come from rank 0 below.
        overlap.discard(h, running_only=True, finish_running=False)
        try:
            topo, payloads, notes = setup(h, self._hier_deadline())
        except StallError:
            raise self._hier_stalled(f"the setup of the local groups at step {h.position.t}",
                                     list(range(hvd.size()))) from None
        h.topology, h.position.generation = topo, _horovod_generation()
        self._hier_adopt(payloads[0]["t"], topo.set_ranks[0])
        self._hier_agree_anchors(per_group=False)
        self._hier_agree_overlap(per_group=False)
        h.position.agreed = True
        # Handles of the old Horovod instance will never complete.
        _hvd_private.forget_pending(self)
        if hvd.rank() != topo.set_ranks[0]:
            return
        s, t = h.config.schedule, h.position.t
        if h.config.shorthand:
            where = (f"{len(topo.set_ranks)} ranks in local groups {topo.groups}; the schedule "
                     f"continues at step {t} (K1={s.local_steps}, K2={s.local_rounds}, "
                     f"warmup {s.warmup_steps})")
        else:
            where = (f"{len(topo.set_ranks)} ranks in levels "
                     f"{[lv.groups for lv in topo.levels]}; the schedule continues at step "
                     f"{t} (periods {list(s.periods)}, warmup {s.warmup_steps})")
        for line in notes:
            log.warning("hvd_hier: %s", line)
        if before is None:
            log.info("hvd_hier: %s", where)
        else:
            log.warning("hvd_hier: Horovod was initialised again (elastic reset): %d ranks "
                        "before, %s", len(before.set_ranks), where)

    def _make_hook(self, p):
        horovod_hook = _DistributedOptimizer._make_hook(self, p)

        def hook(*args):
            # Gradients are reduced here only when the coming step is a warmup (synchronous)
            # step, the schedule position is settled, and deterministic=False.
            h = self._hier
            current = h.position.agreed and h.position.generation is _horovod_generation()
            if current and not h.config.deterministic and self._hier_next() is Reduction.SYNC:
                horovod_hook(*args)

        return hook

    def synchronize(self):
        """Warmup: wait for the gradient allreduce (as Horovod). After warmup: nothing."""
        self._hier_agree()
        if self._hier_next() is Reduction.SYNC:
            return self._hier_sync_grads()
        _hvd_private.set_synchronized(self, True)
        return None

    def _hier_sync_grads(self):
        """The warmup's gradient reduction: Horovod's (its hooks started it during the
        backward pass), or with ``deterministic=True`` hvd_hier's fixed buckets."""
        h = self._hier
        if not h.config.deterministic:
            return _DistributedOptimizer.synchronize(self)
        self._hier_check_grads()
        grads = []
        for p in h.trained:
            if p.grad is None:  # not used by this rank's forward pass: contributes zeros
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        topo = h.topology
        if len(topo.set_ranks) > 1:
            f = h.config.gradient_predivide_factor
            average = h.config.op == Average
            pre, post = (1.0 / f, f / len(topo.set_ranks)) if average else (1.0, 1.0)
            try:
                h.grad_averager.reduce(topo.global_set, "sync", pre, post,
                                       self._hier_deadline(), tensors=grads)
            except StallError:
                raise self._hier_stalled(f"the gradient reduction of step {h.position.t + 1}",
                                         topo.set_ranks) from None
        _hvd_private.set_synchronized(self, True)
        return None

    # torch.amp.GradScaler calls step() on every iteration (instead of skipping it on the
    # ranks whose gradients overflowed) and hands over ``grad_scale`` and ``found_inf``: the
    # schedule then advances on every rank alike, and only the parameter update is skipped.
    _step_supports_amp_scaling = True

    def step(self, closure=None):
        self._hier_agree()
        h = self._hier
        base, schedule = h.base, h.config.schedule
        t = h.position.t + 1
        reduction = schedule.reduction_at(t)
        amp = hasattr(self, "found_inf")  # set by GradScaler.step for this call only
        if reduction is Reduction.SYNC and not amp:
            loss = _DistributedOptimizer.step(self, closure)
        else:
            if reduction is Reduction.SYNC and not _hvd_private.is_synchronized(self):
                self._hier_sync_grads()  # the averaged gradients
            else:
                self._hier_check_grads()
            _hvd_private.set_synchronized(self, False)
            if reduction is not Reduction.SYNC:  # after warmup, before the update
                take_first_anchors(h)
            if h.in_flight:  # collect the overlapped reductions' pieces that have finished
                overlap.progress(h, submit=False)
            update = True
            if amp:  # the scaler's attributes are for us, not for the base optimizer's step
                handed = {k: self.__dict__.pop(k) for k in ("grad_scale", "found_inf")
                          if k in self.__dict__}
                update = not self._hier_unscale_and_check(handed.get("grad_scale"))
            try:
                loss = base.step(self, closure) if update else None
            finally:
                if amp:
                    self.__dict__.update(handed)
            if not update:
                h.stats.skipped_steps += 1
            level = schedule.level_at(t)
            if level is not None:
                self._hier_average(level, t)
            if h.in_flight:
                self._hier_add_due(t)
            if h.in_flight:  # the next batch of pieces, to run during the next computation
                overlap.progress(h, submit=True)
        h.position.t = t
        return loss

    def _hier_unscale_and_check(self, grad_scale) -> bool:
        """Under a GradScaler: divide the gradients by ``grad_scale`` (None: the user already
        unscaled them) and say whether any is inf or NaN, in which case this rank's update
        is skipped. In a warmup step the gradients are the averaged ones, identical on every
        rank, so every rank decides alike; in a local step the decision is this rank's."""
        grads = [p.grad for group in self.param_groups for p in group["params"]
                 if p.grad is not None]
        found = False
        by_key = {}
        for g in grads:
            by_key.setdefault((g.device, g.dtype), []).append(g)
        for (device, _), same in by_key.items():
            flag = torch.zeros((), dtype=torch.float32, device=device)
            inv = (torch.ones((), dtype=torch.float32, device=device) if grad_scale is None
                   else grad_scale.double().reciprocal().float().to(device))
            torch._amp_foreach_non_finite_check_and_unscale_(same, flag, inv)
            found = found or bool(flag.item())
        return found

    def _hier_check_grads(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    if self.sparse_as_dense:
                        p.grad = p.grad.to_dense()
                        continue
                    name = self._hier.names_by_id.get(id(p), "a parameter")
                    raise ValueError(
                        f"hvd_hier.DistributedOptimizer: {name} has a sparse gradient, which "
                        "the averaging phase does not take; pass sparse_as_dense=True (or use "
                        "a dense embedding)")

    def _hier_average(self, level: int, t: int) -> None:
        h = self._hier
        try:
            if overlap.staged(h, level):  # overlapped, or in two stages
                overlap.start(h, level, t, self._hier_deadline())
            else:
                average_level(h, level, t, self._hier_deadline())
        except StallError:
            members = h.topology.levels[level].group
            raise self._hier_stalled(f"the {level_name(h.config, level)} averaging at "
                                     f"step {t}", members) from None

    def _hier_add_due(self, t: int) -> None:
        """The end of step ``t``: the overlapped reductions due now are waited for and added."""
        h = self._hier
        for red in overlap.due(h, t):
            try:
                overlap.add(h, red, self._hier_deadline())
            except StallError:
                raise self._hier_stalled(
                    f"the {level_name(h.config, red.level)} averaging started at step "
                    f"{red.start} (overlapped, due at step {red.due})",
                    h.topology.levels[red.level].group) from None

    def _hier_deadline(self) -> Optional[float]:
        timeout = self._hier.config.stall_timeout_s
        return None if timeout is None else time.monotonic() + timeout

    def _hier_stalled(self, what: str, members) -> StallError:
        timeout = self._hier.config.stall_timeout_s
        return StallError(
            f"hvd_hier: {what} waited {timeout:g} s for ranks {members} and did not complete: "
            "a rank stopped calling step(), or the ranks' schedules or parameters differ "
            "(Horovod's stall warnings name the ranks that did not join). Pass a larger "
            "stall_timeout_s if a rank is legitimately busy that long")

    def zero_grad(self, set_to_none: bool = True):
        if _hvd_private.pending(self):
            raise AssertionError(
                "optimizer.zero_grad() was called after loss.backward() but before "
                "optimizer.step() or optimizer.synchronize(). This is prohibited as it can "
                "cause a race condition.")
        return self._hier.base.zero_grad(self, set_to_none)

    # -- introspection and checkpoints ----------------------------------------------------
    def averaging_stats(self) -> Dict[str, object]:
        """This rank's counters: steps taken and what the averagings did.

        Keys: ``steps`` (calls of step(), the spurious one of broadcast_optimizer_state not
        counted), ``sync_steps`` (warmup steps), ``local_averages``, ``global_averages``,
        ``bytes_local`` and ``bytes_global`` (payload bytes reduced by this rank: the size of
        the averaged tensors, with flat storage of its buffers, padding included; for a
        compressed level the encoded bytes; not wire traffic; 0 for local averagings of a
        group of one),
        ``seconds_local``, ``seconds_global`` (wall time in the averagings),
        ``skipped_steps`` (steps whose update a ``torch.amp.GradScaler`` skipped on this rank
        because its gradients overflowed: the schedule advanced all the same),
        ``skipped_contributions`` (with ``nonfinite="skip"``: non-finite ranks left out of
        this rank's averagings), ``group`` (this rank's local group), ``group_size``,
        ``num_groups``, ``groups`` (every local group). The last four are None in an elastic
        job until its first ``step()`` builds the groups.

        With more than two levels, ``local_*`` add up every level but the outermost and
        ``global_*`` count the outermost; ``group``, ``group_size``, ``num_groups`` and
        ``groups`` are the innermost level's. ``levels`` has one dict per level, innermost
        first: ``period``, ``group_size`` (as passed), ``averages``, ``bytes``, ``seconds``,
        ``group`` and ``groups`` (None until the groups are built).

        A level that reduces in two stages (its groups made of two or more groups of the
        level below, all of one size S >= 2: each rank reduces 1/S of the model across the
        other groups below, then they gather) counts the whole payload, as in one stage. An
        overlapped level counts an averaging when it starts, and, because the level below
        averages first, one of the level below too; its ``seconds`` are the time ``step()``
        spent on it (starting, moving its pieces on, waiting at t + D), not its duration.
        """
        h = self._hier
        out = h.stats.two_level()
        out["steps"] = h.position.t
        out["sync_steps"] = min(h.position.t, h.config.schedule.warmup_steps)
        topo = h.topology  # None until an elastic job's first step
        out["group"] = None if topo is None else list(topo.group)
        out["group_size"] = None if topo is None else topo.group_size
        out["num_groups"] = None if topo is None else len(topo.groups)
        out["groups"] = None if topo is None else [list(g) for g in topo.groups]
        out["levels"] = []
        for i, lv in enumerate(h.config.levels):
            lt = None if topo is None else topo.levels[i]
            size = lv.group_size
            out["levels"].append(dict(
                vars(h.stats.levels[i]), period=lv.period,
                group_size=[list(g) for g in size] if isinstance(size, tuple) else size,
                group=None if lt is None else list(lt.group),
                groups=None if lt is None else [list(g) for g in lt.groups]))
        return out

    def _hier_config(self) -> Dict[str, object]:
        return self._hier.config.schedule_config()

    def state_dict(self):
        """The wrapped optimizer's state, and hvd_hier's under ``"hvd_hier"``: the schedule
        position, configuration, counters, anchors and outer state, and the corrections of
        overlapped reductions still to be added (a reduction in flight is waited for first,
        so that its correction can be saved)."""
        h = self._hier
        if any(red.running for red in h.in_flight):
            self._hier_finish_overlap(discard=False)
        sd = h.base.state_dict(self)
        sd[_STATE_KEY] = {"step": h.position.t, "config": self._hier_config(),
                          "stats": h.stats.to_dict(),
                          "anchors": [None if a is None else a.state_dict() for a in h.anchors],
                          "overlap": overlap.portable(h)}
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved = state_dict.pop(_STATE_KEY, None)
        _DistributedOptimizer.load_state_dict(self, state_dict)
        h = self._hier
        if saved is None:
            warnings.warn(
                "hvd_hier: the optimizer state dict has no Hier-AVG schedule (it was saved by "
                "a plain optimizer); the schedule starts again at step 0")
            h.position.t = 0
            h.stats = Stats.zero(len(h.config.levels))
            self._hier_finish_overlap(discard=True)
            for anchor in filter(None, h.anchors):  # taken afresh after warmup
                anchor.reset()
            return
        if saved["config"] != self._hier_config():
            warnings.warn(
                f"hvd_hier: the checkpoint was saved with {saved['config']}, this optimizer "
                f"has {self._hier_config()}; continuing from step {saved['step']} with the "
                "new schedule")
        h.position.t = int(saved["step"])
        h.stats.load(saved["stats"])
        self._hier_load_anchors(saved.get("anchors"))
        # running reductions of this rank are waited for (the other ranks take part in
        # them) and forgotten; the checkpoint's pending corrections replace them
        self._hier_finish_overlap(discard=True)
        overlap.restore(h, saved.get("overlap", []))

    def _hier_finish_overlap(self, discard: bool) -> None:
        """Finish this rank's overlapped reductions in flight (the other ranks take part in
        them); with ``discard``, then forget them and the pending corrections."""
        h = self._hier
        try:
            (overlap.discard if discard else overlap.settle)(h, self._hier_deadline())
        except StallError:
            raise self._hier_stalled(
                f"the overlapped reductions in flight at step {h.position.t} "
                f"({'load_state_dict' if discard else 'state_dict'} waits for them)",
                h.topology.set_ranks) from None

    def _hier_load_anchors(self, saved) -> None:
        """Restore the anchors of the levels with ``outer`` or ``compression`` from a
        checkpoint of the same levels; otherwise (another configuration, or none saved) they are taken afresh at the
        next step after warmup, with a warning if the checkpoint had some."""
        h = self._hier
        mine = [a is not None for a in h.anchors]
        if saved is not None and [s is not None for s in saved] == mine:
            for anchor, sd in zip(h.anchors, saved):
                if anchor is not None:
                    anchor.load_state_dict(sd)
            return
        for anchor in h.anchors:
            if anchor is not None:
                anchor.reset()
        if any(mine) or (saved and any(s is not None for s in saved)):
            warnings.warn("hvd_hier: the checkpoint's outer optimizers do not match this "
                          "optimizer's levels; their anchors are taken afresh at the next step "
                          "after warmup (outer momentum starts from zero)")
