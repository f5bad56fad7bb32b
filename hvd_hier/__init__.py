"""hvd_hier: Hier-AVG hierarchical averaging SGD for Horovod and PyTorch.

``hvd_hier.DistributedOptimizer`` replaces ``hvd.DistributedOptimizer``: ranks take local
steps, average the model within their group (a Horovod process set, by default the ranks of
one host) every ``local_steps`` steps and over all ranks every ``local_steps * local_rounds``
steps.

Importing hvd_hier before ``hvd.init()`` enables Horovod's dynamic process sets, which the
local groups need.

Without Horovod installed, the package still imports: the kernels (``hvd_hier._C``), the
averagers of ``hvd_hier.averaging`` (given a collective of their own) and the pure modules
(``HierSchedule``, ``plan_groups``) work; the names that need Horovod raise its
``ImportError`` when used.
"""

import os as _os
import sys as _sys

from ._version import __version__  # noqa: E402

# The local groups are process sets added after hvd.init(): that needs dynamic mode. Horovod
# cannot have been initialised if horovod.torch was never imported.
_hvd_torch = _sys.modules.get("horovod.torch")
if _hvd_torch is None or not _hvd_torch.is_initialized():
    _os.environ.setdefault("HOROVOD_DYNAMIC_PROCESS_SETS", "1")

from .collectives import NonFiniteError, StallError  # noqa: E402
from .levels import Level  # noqa: E402
from .schedule import HierSchedule, Reduction  # noqa: E402
from .topology import plan_groups  # noqa: E402

try:
    import horovod.torch  # noqa: E402,F401
except ImportError as _exc:  # the kernels and averagers work without Horovod
    _HOROVOD_ERROR = _exc
else:
    _HOROVOD_ERROR = None
    from .factory import DistributedOptimizer  # noqa: E402
    from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402

_NEEDS_HOROVOD = {"DistributedOptimizer", "save_checkpoint",
                  "load_checkpoint", "CheckpointError"}


def __getattr__(name):
    if name in _NEEDS_HOROVOD and _HOROVOD_ERROR is not None:
        raise ImportError(f"hvd_hier.{name} needs Horovod, which could not be imported "
                          f"({_HOROVOD_ERROR})") from _HOROVOD_ERROR
    raise AttributeError(f"module 'hvd_hier' has no attribute {name!r}")


__all__ = ["DistributedOptimizer", "NonFiniteError", "StallError", "save_checkpoint", "load_checkpoint",
           "CheckpointError", "Level", "HierSchedule", "Reduction", "plan_groups", "__version__"]
