"""How a level reduces: one strategy per kind of reduction behind one interface
(``strategy``), the averagers and codecs they drive, the pieces of a staged reduction, and
the non-finite check. Nothing here knows the schedule."""

CHUNK_BYTES = 2 << 20
"""Bytes one rank sends per collective of a staged (overlapped or two-stage) reduction: one
piece. Pure, so that the cost model (``hvd_hier.plan.model``) reads it without torch."""
