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
"""

from __future__ import annotations

from horovod.torch import mpi_ops
from horovod.torch.optimizer import DistributedOptimizer as _PublicFactory
from horovod.torch.optimizer import _DistributedOptimizer as DistributedOptimizerBase

__all__ = ["DistributedOptimizerBase", "OPTIMIZER_MODULE", "generation", "process_set_table"]

OPTIMIZER_MODULE = _PublicFactory.__module__


def generation():
    return mpi_ops._handle_map


def process_set_table():
    return {tuple(ranks): ps_id
            for ps_id, ranks in mpi_ops._basics._get_process_set_ids_and_ranks().items()}
