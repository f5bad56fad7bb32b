"""The methods of hvd_hier's optimizer, laid over Horovod's ``_DistributedOptimizer`` by the
factory (``hvd_hier.runtime.factory``): the Horovod optimizer protocol (``synchronize``,
``zero_grad``, the gradient hooks of the warmup) and ``step()``, which orchestrates: the
update, then the level that is due reduces (``LevelRuntime.reduce``), then the staged
reductions that are due are added. Agreement and elastic rebuild are in ``agreement``,
gradients in ``gradients``, state dicts in ``hvd_hier.persist.state``."""

from __future__ import annotations

from typing import Dict

import torch

from ..comm import horovod_api
from ..comm.horovod_api import DistributedOptimizerBase as _DistributedOptimizer
from ..config.schedule import Reduction
from ..persist.state import STATE_KEY, hier_state_dict, load_nothing, load_saved, \
    restore_corrections
from . import agreement, gradients
from .state import HierState, averaging_stats
from .stalls import deadline, guard

__all__ = ["HierAvgOptimizer"]


class HierAvgOptimizer(torch.optim.Optimizer):
    """Methods laid over Horovod's ``_DistributedOptimizer`` (see ``DistributedOptimizer``)."""

    def __init__(self, params, named_parameters, compression, backward_passes_per_step, op,
                 gradient_predivide_factor, groups, sparse_as_dense, process_set, state):
        # Horovod's constructor: validates named_parameters, registers the gradient hooks
        # used during warmup (gated by _make_hook below).
        self._hier = state
        _DistributedOptimizer.__init__(
            self, params, named_parameters, compression, backward_passes_per_step, op,
            gradient_predivide_factor, groups, sparse_as_dense, process_set)

    def hier_state(self) -> HierState:
        """hvd_hier's run-time state (``hvd_hier.runtime.state.HierState``): configuration,
        tensors, schedule position, topology, the levels (``LevelRuntime``: groups, anchor,
        strategy, statistics, reductions in flight), counters. For inspection and tests;
        change it only through the optimizer."""
        return self._hier

    def _hier_next(self) -> Reduction:
        h = self._hier
        return h.config.schedule.reduction_at(h.position.t + 1)

    # -- the Horovod optimizer protocol ---------------------------------------------------
    def _make_hook(self, p):
        horovod_hook = _DistributedOptimizer._make_hook(self, p)

        def hook(*args):
            # Gradients are reduced here only when the coming step is a warmup (synchronous)
            # step, the schedule position is settled, and deterministic=False.
            h = self._hier
            current = h.position.agreed and h.position.generation is horovod_api.generation()
            if current and not h.config.deterministic and self._hier_next() is Reduction.SYNC:
                horovod_hook(*args)

        return hook

    def synchronize(self):
        """Warmup: wait for the gradient allreduce (as Horovod). After warmup: nothing."""
        agreement.agree(self)
        if self._hier_next() is Reduction.SYNC:
            return self._hier_sync_grads()
        horovod_api.set_synchronized(self, True)
        return None

    def _hier_sync_grads(self):
        """The warmup's gradient reduction: Horovod's (its hooks started it during the
        backward pass), or with ``deterministic=True`` hvd_hier's fixed buckets."""
        h = self._hier
        if not h.config.deterministic:
            return _DistributedOptimizer.synchronize(self)
        self._hier_check_sparse()
        gradients.reduce_warmup_grads(h)
        horovod_api.set_synchronized(self, True)
        return None

    def _hier_check_sparse(self) -> None:
        gradients.check_sparse(self.param_groups, self.sparse_as_dense, self._hier.names_by_id)

    def zero_grad(self, set_to_none: bool = True):
        if horovod_api.pending(self):
            raise AssertionError(
                "optimizer.zero_grad() was called after loss.backward() but before "
                "optimizer.step() or optimizer.synchronize(). This is prohibited as it can "
                "cause a race condition.")
        return self._hier.base.zero_grad(self, set_to_none)

    # -- step -----------------------------------------------------------------------------
    # torch.amp.GradScaler calls step() on every iteration (instead of skipping it on the
    # ranks whose gradients overflowed) and hands over ``grad_scale`` and ``found_inf``: the
    # schedule then advances on every rank alike, and only the parameter update is skipped.
    _step_supports_amp_scaling = True

    def step(self, closure=None):
        agreement.agree(self)
        h = self._hier
        t = h.position.t + 1
        amp = hasattr(self, "found_inf")  # set by GradScaler.step for this call only
        if h.config.schedule.reduction_at(t) is Reduction.SYNC and not amp:
            loss = _DistributedOptimizer.step(self, closure)
        else:
            loss = self._hier_local_step(t, amp, closure)
        h.position.t = t
        return loss

    def _hier_local_step(self, t: int, amp: bool, closure):
        """A step that hvd_hier updates itself: after warmup (or a warmup step under a
        GradScaler), the update, the due level's reduction and the corrections due."""
        h = self._hier
        warmup = h.config.schedule.reduction_at(t) is Reduction.SYNC
        if warmup and not horovod_api.is_synchronized(self):
            self._hier_sync_grads()  # the averaged gradients
        else:
            self._hier_check_sparse()
        horovod_api.set_synchronized(self, False)
        if not warmup:  # after warmup, before the update: anchors not yet taken become the model
            self._hier_take_first_anchors()
        self._hier_progress(submit=False)  # collect the pieces in flight that have finished
        loss = self._hier_update(amp, closure)
        level = h.config.schedule.level_at(t)
        if level is not None:
            self._hier_reduce(level, t)
        self._hier_add_due(t)
        self._hier_progress(submit=True)  # the next pieces, to run during the next computation
        return loss

    def _hier_update(self, amp: bool, closure):
        """The wrapped optimizer's update (skipped under a GradScaler whose gradients
        overflowed on this rank: counted, and the schedule advances all the same)."""
        h = self._hier
        if not amp:
            return h.base.step(self, closure)
        # the scaler's attributes are for us, not for the base optimizer's step
        handed = {k: self.__dict__.pop(k) for k in ("grad_scale", "found_inf")
                  if k in self.__dict__}
        try:
            if gradients.unscale_and_check(self.param_groups, handed.get("grad_scale")):
                h.stats.skipped_steps += 1
                return None
            return h.base.step(self, closure)
        finally:
            self.__dict__.update(handed)

    def _hier_take_first_anchors(self) -> None:
        """The first step after warmup: every anchor neither taken nor loaded from a
        checkpoint becomes the model."""
        h = self._hier
        pending = [lv.anchor for lv in h.levels if lv.anchor is not None and not lv.anchor.taken]
        if pending:
            h.ctx.relink()
            for anchor in pending:
                anchor.take()

    def _hier_reduce(self, index: int, t: int) -> None:
        level = self._hier.levels[index]
        with guard(self._hier.config, f"the {level.name} averaging at step {t}",
                   level.topology.group):
            level.reduce(t, deadline(self._hier.config))

    def _hier_progress(self, submit: bool) -> None:
        for level in self._hier.levels:
            level.progress(submit)

    def _hier_add_due(self, t: int) -> None:
        """The end of step ``t``: the staged reductions due now are waited for and added."""
        h = self._hier
        for red in [red for red in h.in_flight() if red.due <= t]:
            level = h.levels[red.level]
            with guard(h.config, f"the {level.name} averaging started at step {red.start} "
                                 f"(overlapped, due at step {red.due})", level.topology.group):
                level.complete(red, deadline(h.config))

    # -- introspection and checkpoints ----------------------------------------------------
    def averaging_stats(self) -> Dict[str, object]:
        """This rank's counters: steps taken and what the averagings did (the keys:
        ``hvd_hier.runtime.state.averaging_stats``)."""
        return averaging_stats(self._hier)

    def state_dict(self):
        """The wrapped optimizer's state, and hvd_hier's under ``"hvd_hier"``
        (``hvd_hier.persist.state``: the schedule position, configuration, counters, anchors
        and outer state, and the corrections of overlapped reductions still to be added; a
        reduction in flight is waited for first, so that its correction can be saved)."""
        h = self._hier
        if any(red.running for red in h.in_flight()):
            self._hier_finish_in_flight(discard=False)
        sd = h.base.state_dict(self)
        sd[STATE_KEY] = hier_state_dict(h)
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        saved = state_dict.pop(STATE_KEY, None)
        _DistributedOptimizer.load_state_dict(self, state_dict)
        h = self._hier
        if saved is None:
            self._hier_finish_in_flight(discard=True)
            load_nothing(h)
            return
        load_saved(h, saved)
        # running reductions of this rank are waited for (the other ranks take part in
        # them) and forgotten; the checkpoint's pending corrections replace them
        self._hier_finish_in_flight(discard=True)
        restore_corrections(h, saved.get("overlap", []))

    def _hier_finish_in_flight(self, discard: bool) -> None:
        """Finish this rank's staged reductions in flight (the other ranks take part in
        them); with ``discard``, then forget them and the pending corrections."""
        h = self._hier
        what = (f"the overlapped reductions in flight at step {h.position.t} "
                f"({'load_state_dict' if discard else 'state_dict'} waits for them)")
        members = h.topology.set_ranks if h.topology is not None else []
        with guard(h.config, what, members):
            for level in h.levels:
                if discard:
                    level.discard(deadline(h.config))
                else:
                    level.settle(deadline(h.config))
