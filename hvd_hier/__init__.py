"""hvd_hier: Hier-AVG hierarchical averaging SGD for Horovod and PyTorch.

``hvd_hier.DistributedOptimizer`` replaces ``hvd.DistributedOptimizer``: ranks take local
steps, average the model within their group (a Horovod process set, by default the ranks of
one host) every ``local_steps`` steps and over all ranks every ``local_steps * local_rounds``
steps.

Importing hvd_hier before ``hvd.init()`` enables Horovod's dynamic process sets, which the
local groups need.

The package imports without torch and Horovod: ``Level``, ``HierSchedule``, the errors and
the planner's cost model (``hvd_hier.plan.model``) are pure. ``DistributedOptimizer``,
``save_checkpoint`` and ``load_checkpoint`` import Horovod when first used and raise
``ImportError`` naming it where it is missing; the kernels (``hvd_hier.comm.extension``) and
the averagers (``hvd_hier.reduce``, given a collective of their own) need torch only.

The layout: ``config`` (what the user asked for), ``topology`` (who averages with whom),
``reduce`` (how a level reduces: its strategies), ``outer`` (anchor and outer step),
``runtime`` (the optimizer and its levels), ``persist`` (state dicts and checkpoints),
``comm`` (collectives, Horovod's private API, the extension), ``plan`` (the planner).
"""

import importlib as _importlib
import os as _os
import sys as _sys

from ._version import __version__  # noqa: E402

# The local groups are process sets added after hvd.init(): that needs dynamic mode. Horovod
# cannot have been initialised if horovod.torch was never imported.
_hvd_torch = _sys.modules.get("horovod.torch")
if _hvd_torch is None or not _hvd_torch.is_initialized():
    _os.environ.setdefault("HOROVOD_DYNAMIC_PROCESS_SETS", "1")

from .config.codecs import TopK  # noqa: E402
from .config.levels import Level  # noqa: E402
from .config.schedule import HierSchedule, Reduction  # noqa: E402
from .errors import CheckpointError, NonFiniteError, StallError  # noqa: E402

# The names that need Horovod, and where they live: imported on first use, so that the pure
# parts of the package import without torch or Horovod.
_NEEDS_HOROVOD = {"DistributedOptimizer": "hvd_hier.runtime.factory",
                  "save_checkpoint": "hvd_hier.persist.checkpoint",
                  "load_checkpoint": "hvd_hier.persist.checkpoint"}


def __getattr__(name):
    module = _NEEDS_HOROVOD.get(name)
    if module is None:
        raise AttributeError(f"module 'hvd_hier' has no attribute {name!r}")
    try:
        value = getattr(_importlib.import_module(module), name)
    except ImportError as exc:
        raise ImportError(f"hvd_hier.{name} needs Horovod, which could not be imported "
                          f"({exc})") from exc
    globals()[name] = value
    return value


__all__ = ["DistributedOptimizer", "NonFiniteError", "StallError", "save_checkpoint",
           "load_checkpoint", "CheckpointError", "Level", "TopK", "HierSchedule", "Reduction",
           "__version__"]
