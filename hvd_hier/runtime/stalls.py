"""Deadlines for the optimizer's collectives, and the ``StallError`` that names what waited
for whom when one passes."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Optional, Sequence

from ..errors import StallError

__all__ = ["deadline", "stalled", "guard"]


def deadline(config) -> Optional[float]:
    """When a collective started now must have completed (``time.monotonic()``; None: no
    limit), from ``stall_timeout_s``."""
    timeout = config.stall_timeout_s
    return None if timeout is None else time.monotonic() + timeout


def stalled(config, what: str, members: Sequence[int]) -> StallError:
    """The error for ``what`` having waited ``stall_timeout_s`` for ``members``."""
    return StallError(
        f"hvd_hier: {what} waited {config.stall_timeout_s:g} s for ranks {list(members)} and did "
        "not complete: a rank stopped calling step(), or the ranks' schedules or parameters "
        "differ (Horovod's stall warnings name the ranks that did not join). Pass a larger "
        "stall_timeout_s if a rank is legitimately busy that long")


@contextmanager
def guard(config, what: str, members: Sequence[int]):
    """Inside: a bare ``StallError`` becomes ``stalled(config, what, members)``."""
    try:
        yield
    except StallError:
        raise stalled(config, what, members) from None
