"""hvd_hier: Hier-AVG hierarchical averaging SGD for Horovod and PyTorch.

``hvd_hier.DistributedOptimizer`` replaces ``hvd.DistributedOptimizer``: ranks take local
steps, average the model within their group (a Horovod process set, by default the ranks of
one host) every ``local_steps`` steps and over all ranks every ``local_steps * local_rounds``
steps.

Importing hvd_hier before ``hvd.init()`` enables Horovod's dynamic process sets, which the
local groups need.
"""

import os as _os

import horovod.torch as _hvd

if not _hvd.is_initialized():
    # The local groups are process sets added after hvd.init(): that needs dynamic mode.
    _os.environ.setdefault("HOROVOD_DYNAMIC_PROCESS_SETS", "1")

from .optimizer import DistributedOptimizer, NonFiniteError, StallError  # noqa: E402
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from .schedule import HierSchedule, Reduction  # noqa: E402
from .topology import plan_groups  # noqa: E402

__version__ = "0.1.0"

__all__ = ["DistributedOptimizer", "NonFiniteError", "StallError", "save_checkpoint", "load_checkpoint",
           "CheckpointError", "HierSchedule", "Reduction", "plan_groups", "__version__"]
