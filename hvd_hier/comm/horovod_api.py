"""Every use of Horovod's private API, in one place: a Horovod upgrade touches this file.

* ``DistributedOptimizerBase``: ``horovod.torch.optimizer._DistributedOptimizer``, whose
  methods hvd_hier's optimizer class is built over (its gradient hooks serve the warmup).
* ``OPTIMIZER_MODULE``: the ``__module__`` Horovod's own wrapper classes have. Horovod's
  ``broadcast_optimizer_state`` creates optimizer state by calling the *base class's*
  ``step()`` for optimizers of that module, not ``optimizer.step()``; hvd_hier's class takes
  it, so that call neither advances the schedule nor starts a collective.
* ``generation()``: horovod.torch's table of pending handles, which every ``hvd.init()``
  replaces: when it changes, Horovod was initialised again (an elastic reset).
* ``process_set_table()``: Horovod's process sets, ``{tuple(ranks): id}``.
* The attributes of ``_DistributedOptimizer`` that hvd_hier's methods read or write:
  ``pending(opt)`` (gradient reductions in flight), ``is_synchronized`` /
  ``set_synchronized`` (whether ``synchronize()`` already ran this step), and
  ``forget_pending(opt)`` (after an elastic reset, whose old handles never complete).
* What horovodrun tells a rank in its environment: ``hostname()`` and ``elastic_job()``.
"""

from __future__ import annotations

import os
import socket

from horovod.torch import mpi_ops
from horovod.torch.optimizer import DistributedOptimizer as _PublicFactory
from horovod.torch.optimizer import _DistributedOptimizer as DistributedOptimizerBase

__all__ = ["DistributedOptimizerBase", "OPTIMIZER_MODULE", "generation", "process_set_table",
           "pending", "is_synchronized", "set_synchronized", "forget_pending", "hostname",
           "elastic_job"]

OPTIMIZER_MODULE = _PublicFactory.__module__


def generation():
    return mpi_ops._handle_map


def process_set_table():
    return {tuple(ranks): ps_id
            for ps_id, ranks in mpi_ops._basics._get_process_set_ids_and_ranks().items()}


def pending(opt) -> bool:
    return bool(opt._handles)


def is_synchronized(opt) -> bool:
    return opt._synchronized


def set_synchronized(opt, value: bool) -> None:
    opt._synchronized = value


def forget_pending(opt) -> None:
    """Drop the handles of a Horovod instance that is gone, as if no step had begun."""
    opt._handles = {}
    opt._synchronized = False
    for p in opt._allreduce_delay:
        opt._allreduce_delay[p] = opt.backward_passes_per_step


def hostname() -> str:
    """This rank's host: the name horovodrun placed it on (it tells apart two names of one
    machine, e.g. localhost and 127.0.0.1, as two hosts, as Horovod itself does)."""
    return os.environ.get("HOROVOD_HOSTNAME") or socket.gethostname()


def elastic_job() -> bool:
    """Whether horovodrun started this process for elastic training (it sets HOROVOD_ELASTIC)."""
    return os.environ.get("HOROVOD_ELASTIC") == "1"
