"""Loads the compiled extension ``hvd_hier._C``, with a clear error where it is missing."""

from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before the extension that links against it)

try:
    from hvd_hier import _C as _C_module

    _IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    _C_module = None
    _IMPORT_ERROR = exc


def extension():
    """The ``hvd_hier._C`` module; raises ``ImportError`` (chained to the original) if absent."""
    if _C_module is None:
        raise ImportError(
            "hvd_hier's compiled extension hvd_hier._C could not be imported "
            f"({_IMPORT_ERROR}). Build it with `make install` (or `pip install -e . "
            "--no-build-isolation` inside an environment that has torch)."
        ) from _IMPORT_ERROR
    return _C_module
