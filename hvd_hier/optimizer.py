"""``hvd_hier.DistributedOptimizer``: Hier-AVG in place of ``hvd.DistributedOptimizer``."""

from __future__ import annotations

import logging
import time
import warnings
from typing import Dict, List, Optional

import torch

import horovod.torch as hvd
from horovod.torch.compression import Compression
from horovod.torch.mpi_ops import Average, global_process_set
from ._horovod import OPTIMIZER_MODULE
from ._horovod import DistributedOptimizerBase as _DistributedOptimizer
from ._horovod import generation as _horovod_generation

from .averaging import BucketAverager, FlatAverager
from .collectives import NonFiniteError, StallError, wait
from .config import collect_tensors, make_config
from .jobsetup import elastic_job, setup
from .schedule import Reduction
from .state import HierState, Stats

__all__ = ["DistributedOptimizer", "NonFiniteError", "StallError"]

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
        pos.agreed = True

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
        try:
            topo, payloads, notes = setup(h, self._hier_deadline())
        except StallError:
            raise self._hier_stalled(f"the setup of the local groups at step {h.position.t}",
                                     list(range(hvd.size()))) from None
        h.topology, h.position.generation = topo, _horovod_generation()
        self._hier_adopt(payloads[0]["t"], topo.set_ranks[0])
        h.position.agreed = True
        # Handles of the old Horovod instance will never complete.
        self._handles = {}
        self._synchronized = False
        for p in self._allreduce_delay:
            self._allreduce_delay[p] = self.backward_passes_per_step
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
        self._synchronized = True
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
        self._synchronized = True
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
            if reduction is Reduction.SYNC and not self._synchronized:
                self._hier_sync_grads()  # the averaged gradients
            else:
                self._hier_check_grads()
            self._synchronized = False
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

    def _hier_kind(self, level: int) -> str:
        """How a level is named in messages and collectives: "local" and "global" for the
        two-level form, "level i" otherwise."""
        config = self._hier.config
        if config.shorthand:
            return "global" if level == len(config.levels) - 1 else "local"
        return f"level {level}"

    def _hier_average(self, level: int, t: int) -> None:
        try:
            self._hier_average_or_stall(level, t)
        except StallError:
            members = self._hier.topology.levels[level].group
            raise self._hier_stalled(f"the {self._hier_kind(level)} averaging at step {t}",
                                     members) from None

    def _hier_average_or_stall(self, level: int, t: int) -> None:
        h = self._hier
        lt = h.topology.levels[level]
        # a group of one rank has no process set: its average is itself
        process_set, members = lt.process_set, lt.group
        size = len(members)
        kind = self._hier_kind(level)
        tag = kind.replace(" ", "")
        start = time.perf_counter()
        divisor = size
        if size > 1:
            bad = self._hier_nonfinite_ranks(process_set, members, tag)
            if bad:
                where = (f"rank {bad[0]}" if len(bad) == 1
                         else f"ranks {', '.join(map(str, bad))}")
                if h.config.nonfinite == "raise" or len(bad) == size:
                    raise NonFiniteError(
                        f"hvd_hier: the parameters of {where} hold inf or NaN at step {t}, "
                        f"before the {kind} averaging of ranks {members}; nothing was "
                        "averaged, so the other ranks' parameters are intact" + (
                            "" if len(bad) == size else
                            " (nonfinite='skip' would average the finite ranks instead)"))
                warnings.warn(
                    f"hvd_hier: step {t}, {kind} averaging: the parameters of {where} hold "
                    "inf or NaN; "
                    f"averaging the other {size - len(bad)} ranks (nonfinite='skip')")
                if hvd.rank() in bad:  # contribute nothing; receive the finite ranks' average
                    with torch.no_grad():
                        torch._foreach_zero_(h.averager.tensors)
                divisor = size - len(bad)
                h.stats.skipped_contributions += len(bad)
        moved = h.averager.average(process_set, divisor, tag, self._hier_deadline())
        h.stats.levels[level].add(moved, time.perf_counter() - start)

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

    def _hier_nonfinite_ranks(self, process_set, members, kind: str) -> List[int]:
        """The ranks of ``members`` whose averaged tensors hold inf or NaN (every rank of the
        set gets the same answer): a max-abs pass here, then one allreduce of a flag per rank."""
        tensors = self._hier.averager.tensors
        finite = True
        if tensors:
            peaks = torch._foreach_norm(tensors, float("inf"))  # NaN and inf propagate
            finite = bool(torch.isfinite(torch.stack([x.float() for x in peaks])).all())
        flags = torch.zeros(len(members), dtype=torch.float32)
        flags[members.index(hvd.rank())] = 0.0 if finite else 1.0
        handle = hvd.allreduce_async(flags, op=hvd.Sum, name=f"hvd_hier.{kind}.nonfinite",
                                     process_set=process_set)
        flags = wait(handle, self._hier_deadline())
        return [r for r, f in zip(members, flags.tolist()) if f > 0]

    def zero_grad(self, set_to_none: bool = True):
        if self._handles:
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
        the averaged tensors, with flat storage of its buffers, padding included; not wire
        traffic; 0 for local averagings of a group of one),
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
        h = self._hier
        sd = h.base.state_dict(self)
        sd[_STATE_KEY] = {"step": h.position.t, "config": self._hier_config(),
                          "stats": h.stats.to_dict()}
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
            return
        if saved["config"] != self._hier_config():
            warnings.warn(
                f"hvd_hier: the checkpoint was saved with {saved['config']}, this optimizer "
                f"has {self._hier_config()}; continuing from step {saved['step']} with the "
                "new schedule")
        h.position.t = int(saved["step"])
        h.stats.load(saved["stats"])


def DistributedOptimizer(optimizer, named_parameters=None, compression=Compression.none,
                         backward_passes_per_step=1, op=Average, gradient_predivide_factor=1.0,
                         num_groups=0, groups=None, sparse_as_dense=False,
                         process_set=global_process_set, *, local_steps=None, local_rounds=None,
                         group_size=None, levels=None, warmup_steps=0, buffers=None,
                         bucket_cap_mb=25.0, flat_storage=False, nonfinite="raise",
                         stall_timeout_s=600.0, deterministic=False):
    """Wrap ``optimizer`` to train with Hier-AVG (hierarchical averaging SGD).

    A drop-in replacement for ``hvd.DistributedOptimizer``: same arguments, same use. Each
    rank steps on its own gradients; every ``local_steps`` (K1) steps its local group
    averages the model, and every ``local_steps * local_rounds`` (K1 * K2) steps all ranks
    of ``process_set`` average it instead (Zhou & Cong, "A Distributed Hierarchical SGD
    Algorithm with Sparse Global Reduction", 2019, https://arxiv.org/abs/1903.05133).

    Let t count the calls of ``step()`` from 1. For ``t <= warmup_steps`` the step is
    synchronous SGD exactly as ``hvd.DistributedOptimizer`` does it (gradients reduced with
    ``op``, ``compression``, ``groups`` ..., overlapped with the backward pass; the very
    first step reduces after the backward pass, once the ranks agree on the schedule). For
    ``u = t - warmup_steps >= 1`` the wrapped optimizer steps on local gradients, then if
    ``u % (K1*K2) == 0`` every parameter in ``param_groups`` (and the floating-point
    ``buffers``) is averaged over ``process_set``; else if ``u % K1 == 0`` it is averaged
    within the local group; else nothing. Optimizer state (momentum) stays local.

    Special cases: K1 = K2 = 1 is synchronous SGD (for SGD, also with momentum and weight
    decay, identical to ``hvd.DistributedOptimizer`` up to rounding); ``group_size=1`` is
    K-AVG / local SGD with K = K1*K2; ``group_size`` = all ranks is K-AVG with K = K1.

    Args:
        optimizer: the optimizer to wrap (any ``torch.optim.Optimizer``); the returned
            object is of a subclass of its class over the same ``param_groups``.
        named_parameters, compression, backward_passes_per_step, op,
        gradient_predivide_factor, num_groups, groups, sparse_as_dense: as in
            ``hvd.DistributedOptimizer``; they govern the gradient reduction of the warmup
            steps. ``op`` may be ``hvd.Average`` or ``hvd.Sum`` (Adasum is a different
            algorithm and is refused). ``sparse_as_dense=True`` also densifies sparse
            gradients before local steps, which otherwise raise an error.
        process_set: the ranks that train together (default: all). The global reduction
            spans it; the local groups partition it.
        local_steps (int): K1 >= 1, local steps between two averagings. Default 4.
        local_rounds (int): K2 >= 1, local averagings per global one. Default 4.
        group_size (int or "local"): S, ranks per local group. An int makes contiguous
            blocks of S ranks of ``process_set`` in rank order (S must divide its size);
            ``"local"`` (default) groups the ranks of each host, as ``horovodrun`` placed
            them (every host must have the same number).
        levels: any number of averaging levels instead of the three arguments above:
            ``[(period, group_size), ...]`` or ``hvd_hier.Level(period, group_size)``,
            innermost first. ``group_size`` is an int, ``"local"``, ``"all"`` or a list of
            rank lists (e.g. racks) that partitions ``process_set``; the outermost level must
            span it (``"all"`` or its size). Each period is a multiple of the one below and
            each level's groups are unions of the groups below. At ``u = t - warmup_steps``
            the outermost level whose period divides ``u`` averages (at most one per step).
            ``local_steps=K1, local_rounds=K2, group_size=S`` is exactly
            ``levels=[(K1, S), (K1 * K2, "all")]``; passing both forms is an error.
        warmup_steps (int): steps of synchronous SGD before averaging starts. Default 0.
        buffers: optional iterable of tensors (e.g. ``model.buffers()``) averaged at the
            same steps as the parameters; integer buffers (BatchNorm's step counter) are
            left alone.
        bucket_cap_mb (float): largest averaging bucket in MiB. Default 25.
        flat_storage (bool): move the parameters (and ``buffers``) into a few preallocated
            flat buffers of at most ``bucket_cap_mb`` each, and make them views into those
            buffers, so that an averaging reduces the buffers in place with no packing and
            no extra memory. The parameter objects stay the same (``model.parameters()``,
            ``param_groups`` and ``state_dict()`` work as before); only their memory moves,
            once, when the optimizer is created. Create the optimizer after moving the
            model to its device and dtype. Tied (memory-sharing) parameters are refused.
            ``torch.save`` of a single parameter saves its whole buffer (save
            ``p.clone()``, or the model's ``state_dict()``, which saves each buffer once).
            Default False.
        nonfinite (str): what an averaging does when a rank's parameters or buffers hold
            inf or NaN (checked on every rank before each averaging, with one small
            collective: the max-abs of the averaged tensors and a flag per rank).
            ``"raise"`` (default): every rank raises ``NonFiniteError`` naming the ranks,
            before the averaging moves anything, so no rank's parameters are poisoned and
            none is lost. ``"skip"``: the other ranks' values are averaged (the divisor is the
            number of finite ranks) and the offending ranks receive that average; it warns
            and counts ``skipped_contributions``. When every rank is non-finite, both raise.
        stall_timeout_s (float or None): how long an averaging (or the first step's
            agreement on the schedule) waits for the other ranks of its group before it
            raises ``StallError`` naming the step and the ranks: a rank that stopped calling
            ``step()`` is reported instead of hanging the job. Horovod's stall inspector
            also warns every 60 s which ranks are missing. None waits forever. Warmup steps
            are Horovod's own gradient allreduce and wait as Horovod does, except with
            ``deterministic=True``, whose warmup reduction is hvd_hier's and honours this
            timeout too. Default 600.
        deterministic (bool): make every reduction reproducible bit for bit, from run to run
            and across a restart from a checkpoint. Horovod fuses the reductions that are in
            flight together depending on timing, and a ring of 3 or more ranks then adds in
            another order (a difference in the last bit). With True, warmup gradients are
            averaged after the backward pass, through hvd_hier's buckets in parameter order,
            instead of by Horovod's hooks during it (no overlap; ``compression`` must be
            ``Compression.none``, ``groups`` has no effect), and an averaging reduces one
            bucket at a time. Default False.

    Returns:
        The wrapped optimizer. Besides the ``torch.optim.Optimizer`` API and Horovod's
        ``synchronize()`` / ``skip_synchronize()``, it has ``averaging_stats()``; its
        ``state_dict()`` carries the schedule position.

    Example::

        import torch
        import horovod.torch as hvd
        import hvd_hier

        hvd.init()
        model = Net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1 * hvd.size(), momentum=0.9)
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        opt = hvd_hier.DistributedOptimizer(
            opt, named_parameters=model.named_parameters(),
            local_steps=4, local_rounds=8, warmup_steps=100, buffers=model.buffers())
        hvd.broadcast_optimizer_state(opt, root_rank=0)
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    .. warning ::
        Between averagings the ranks' models differ. Evaluate or save the model right after
        a global averaging (``averaging_stats()["global_averages"]`` just grew, or
        ``t - warmup_steps`` a multiple of K1*K2) if every rank must hold the same model.

    .. warning ::
        Every rank must call ``step()`` the same number of times: the averagings are
        collectives. The schedule position is taken from the first rank of ``process_set``
        at the first ``step()``, so load a checkpoint before the first step (on that rank
        or on all).

    Elastic Horovod (``hvd.elastic.run`` with ``hvd.elastic.TorchState(model=...,
    optimizer=...)``): in an elastic job (``HOROVOD_ELASTIC=1``, set by horovodrun) the
    construction is not a collective, so that a worker can join a running job; the groups are
    built at the first ``step()``. After every reset (Horovod initialised again) the next
    ``step()`` rebuilds them for the new ranks, re-checks that the ranks agree, and takes the
    schedule position of rank 0. ``group_size`` is fitted to each new size: an integer that
    does not divide it becomes its largest divisor not above it; ``"local"`` keeps one group
    per host, even of different sizes. The first rank logs each reset and each use of the
    rule on the ``hvd_hier`` logger. ``process_set`` must be the global process set.
    """
    # ---- checks that need no other rank: raised on every rank before any collective ----
    if not hvd.is_initialized():
        raise RuntimeError(
            "hvd_hier.DistributedOptimizer: Horovod is not initialised; call hvd.init() first")
    elastic = elastic_job()
    if named_parameters is not None:
        named_parameters = list(named_parameters)
    config = make_config(
        local_steps=local_steps, local_rounds=local_rounds, group_size=group_size, levels=levels,
        warmup_steps=warmup_steps, op=op, compression=compression,
        backward_passes_per_step=backward_passes_per_step,
        gradient_predivide_factor=gradient_predivide_factor, num_groups=num_groups,
        groups=groups, sparse_as_dense=sparse_as_dense, bucket_cap_mb=bucket_cap_mb,
        flat_storage=flat_storage, nonfinite=nonfinite, stall_timeout_s=stall_timeout_s,
        deterministic=deterministic, elastic=elastic)
    if process_set is None or getattr(process_set, "process_set_id", None) is None:
        raise ValueError(
            f"process_set must be an initialised Horovod process set, got {process_set}")
    if elastic and process_set.process_set_id != 0:
        raise ValueError(
            f"process_set must be hvd.global_process_set in an elastic job, got {process_set}: "
            "Horovod does not re-create other process sets when the job changes size")
    found = collect_tensors(optimizer, named_parameters, buffers, config.flat_storage)
    state = HierState(config, process_set, found, optimizer.__class__)
    if not elastic:
        # One allgather now: disagreeing ranks and bad groups fail here, on every rank,
        # before the optimizer exists. (An elastic job sets up at its first step instead: a
        # worker that joins a running job constructs its optimizer while the others are
        # already inside hvd.elastic.run, so construction must not be a collective.)
        state.topology, _, _ = setup(state)
        state.position.generation = _horovod_generation()
    cap = config.bucket_cap_bytes
    in_flight = 1 if config.deterministic else 2
    if config.flat_storage:
        state.averager = FlatAverager(found.all, cap, max_in_flight=in_flight, names=found.labels)
    else:
        state.averager = BucketAverager(found.all, cap, max_in_flight=in_flight)
    if config.deterministic:  # warmup: the gradients of the trained parameters, in a fixed layout
        state.trained = [p for p in found.params if p.requires_grad]
        state.grad_averager = BucketAverager(state.trained, cap, max_in_flight=1)
    base = optimizer.__class__
    namespace = dict(_DistributedOptimizer.__dict__)
    namespace.update({k: v for k, v in _HierAvgOptimizer.__dict__.items()
                      if k not in ("__dict__", "__weakref__")})
    # Horovod's module: hvd.broadcast_optimizer_state then creates the optimizer's state
    # through the base class's step(), not through this one (see _horovod.py).
    namespace["__module__"] = OPTIMIZER_MODULE
    namespace["__doc__"] = base.__doc__
    cls = type(base.__name__, (base,), namespace)
    return cls(optimizer.param_groups, named_parameters, compression,
               config.backward_passes_per_step, config.op, config.gradient_predivide_factor,
               config.groups, config.sparse_as_dense, process_set, state)
