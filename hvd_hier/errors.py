"""The errors hvd_hier raises, the same on every rank. Pure: no torch, no Horovod."""

__all__ = ["NonFiniteError", "StallError", "CheckpointError"]


class NonFiniteError(FloatingPointError):
    """An averaging found inf or NaN in some ranks' parameters (raised on every rank)."""


class StallError(TimeoutError):
    """A collective did not complete in time: some rank of its process set never joined."""


class CheckpointError(RuntimeError):
    """A checkpoint folder that cannot resume this job (raised on every rank)."""
