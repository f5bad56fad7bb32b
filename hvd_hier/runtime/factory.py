"""``hvd_hier.DistributedOptimizer``: Hier-AVG in place of ``hvd.DistributedOptimizer``.

The public factory: it checks the arguments (``hvd_hier.config.options``), collects the
tensors, builds the averagers and the levels (``level.py``), fits the groups to the job
(``agreement.setup``), and returns an instance of a subclass of the user's optimizer class
with the methods of ``optimizer.py`` laid over Horovod's ``_DistributedOptimizer``.
"""

from __future__ import annotations

import horovod.torch as hvd
from horovod.torch.compression import Compression
from horovod.torch.mpi_ops import Average, global_process_set

from ..comm.horovod_api import OPTIMIZER_MODULE, elastic_job
from ..comm.horovod_api import DistributedOptimizerBase as _DistributedOptimizer
from ..config.options import collect_tensors, make_config
from ..reduce.buckets import BucketAverager
from ..reduce.flat import FlatAverager
from ..reduce.strategy import Context
from .agreement import bind, setup
from .build import build_levels
from .optimizer import HierAvgOptimizer
from .state import HierState

__all__ = ["DistributedOptimizer"]


def DistributedOptimizer(optimizer, named_parameters=None, compression=Compression.none,
                         backward_passes_per_step=1, op=Average, gradient_predivide_factor=1.0,
                         num_groups=0, groups=None, sparse_as_dense=False,
                         process_set=global_process_set, *, local_steps=None, local_rounds=None,
                         group_size=None, levels=None, outer=None, global_compression=None,
                         overlap_steps=None, warmup_steps=0, buffers=None,
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
        outer: the two-level form's outer optimizer at the global level (with ``levels=``,
            give it to a level: ``hvd_hier.Level(period, group_size, outer=...)``): a callable
            that takes a list of tensors and returns a ``torch.optim.Optimizer`` over them,
            e.g. ``functools.partial(torch.optim.SGD, lr=0.7, momentum=0.9, nesterov=True)``.
            Each group of the level keeps an anchor x̄ (the model it last agreed on, taken at
            the first step after warmup: the ranks must hold the same model then); at the
            level's averaging the outer optimizer steps on x̄ − ḡ (ḡ: the group's mean) and
            the parameters become the new x̄; buffers are averaged plainly. One more copy of
            the averaged tensors per such level. Default None (plain averaging).
        global_compression (str): the two-level form's compression at the global level (with
            ``levels=``: ``hvd_hier.Level(period, group_size, compression=...)``): ``"fp16"``,
            ``"bf16"`` or ``"int8"``. The level reduces the delta from its anchor, encoded
            (int8: a scale per chunk of 2048 elements and error feedback), through one
            alltoall, float32 sums per shard and one allgather (``hvd_hier.reduce.codec``).
            Default None (the full-precision model).
        overlap_steps (int): the two-level form's overlap at the global level (with
            ``levels=``: ``hvd_hier.Level(period, group_size, overlap_steps=D)``): D with
            0 <= D < K1*K2. With D >= 1 the global reduction runs behind the next D steps
            instead of holding up its step: at its step every local group averages, the
            result s is reduced in pieces that each ``step()`` moves on, and at the end of
            step t + D every rank adds r − s (r: the global mean, or the outer optimizer's
            new anchor) to its parameters (``hvd_hier.reduce.staged``). One more copy of the
            averaged tensors (two with ``outer`` and no compression). Default None (0).
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
            inf or NaN (checked on every rank before each averaging: one sum per averaged
            tensor, a non-finite sum settled by a max-abs pass, then one small allreduce of
            a flag per rank).
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
        outer=outer, global_compression=global_compression, overlap_steps=overlap_steps,
        warmup_steps=warmup_steps, op=op,
        compression=compression,
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
    state = _state(config, process_set, found, optimizer.__class__)
    if not elastic:
        # One allgather now: disagreeing ranks and bad groups fail here, on every rank,
        # before the optimizer exists. (An elastic job sets up at its first step instead: a
        # worker that joins a running job constructs its optimizer while the others are
        # already inside hvd.elastic.run, so construction must not be a collective.)
        topology, level_topologies, _, _ = setup(state)
        bind(state, topology, level_topologies)
    return _wrap(optimizer, named_parameters, compression, config, process_set, state)


def _wrap(optimizer, named_parameters, compression, config, process_set, state):
    """An instance of a subclass of the user's optimizer class, over the same param_groups,
    with hvd_hier's methods laid over Horovod's ``_DistributedOptimizer``."""
    base = optimizer.__class__
    namespace = dict(_DistributedOptimizer.__dict__)
    namespace.update({k: v for k, v in HierAvgOptimizer.__dict__.items()
                      if k not in ("__dict__", "__weakref__")})
    # Horovod's module: hvd.broadcast_optimizer_state then creates the optimizer's state
    # through the base class's step(), not through this one (see hvd_hier.comm.horovod_api).
    namespace["__module__"] = OPTIMIZER_MODULE
    namespace["__doc__"] = base.__doc__
    cls = type(base.__name__, (base,), namespace)
    return cls(optimizer.param_groups, named_parameters, compression,
               config.backward_passes_per_step, config.op, config.gradient_predivide_factor,
               config.groups, config.sparse_as_dense, process_set, state)


def _state(config, process_set, found, base) -> HierState:
    """The optimizer's state before any collective: the averagers, and the levels with the
    anchors, codecs and the user's outer optimizers built (and checked) over them."""
    state = HierState(config, process_set, found, base)
    cap = config.bucket_cap_bytes
    if config.flat_storage:
        # one buffer at a time: Horovod fuses collectives that are ready together, which
        # copies flat storage into its fusion buffer and back; alone, a buffer is reduced in
        # place (measured on the simulated cluster: 407 against 421 ms per step, within
        # the noise, and no fusion buffer)
        state.averager = FlatAverager(found.all, cap, max_in_flight=1, names=found.labels)
    else:
        in_flight = 1 if config.deterministic else 2
        state.averager = BucketAverager(found.all, cap, max_in_flight=in_flight)
    if config.deterministic:  # warmup: the gradients of the trained parameters, in a fixed layout
        state.trained = [p for p in found.params if p.requires_grad]
        state.grad_averager = BucketAverager(state.trained, cap, max_in_flight=1)
    state.ctx = Context(state.averager, config.nonfinite, config.deterministic,
                        config.flat_storage, state.stats)
    state.levels = build_levels(config, found, state.averager, state.ctx)
    return state
