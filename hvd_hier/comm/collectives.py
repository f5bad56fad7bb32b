"""The collective helpers of hvd_hier: a wait with a deadline, an allgather and a broadcast
of Python objects, and the averagers' default collective. Horovod is imported where it is
used, so that the averagers work without it (given a collective of their own)."""

from __future__ import annotations

import pickle
import time
from typing import Optional

import torch

from ..errors import StallError

__all__ = ["wait", "allgather_object", "broadcast_object", "cpu_copy", "HorovodSum"]


def wait(handle, deadline: Optional[float]):
    """``hvd.synchronize(handle)``, but raise ``StallError`` once ``time.monotonic()`` passes
    ``deadline`` (None: wait as long as it takes). Polls with a backoff of at most 2 ms."""
    import horovod.torch as hvd

    if deadline is not None:
        delay = 1e-4
        while not hvd.poll(handle):
            if time.monotonic() > deadline:
                raise StallError("a collective did not complete before its deadline")
            time.sleep(delay)
            delay = min(2 * delay, 2e-3)
    return hvd.synchronize(handle)


class HorovodSum:
    """The collective the averagers use unless given another: Horovod's asynchronous in-place
    allreduce (sum) of a buffer over a process set, and a wait with a deadline.

    Any object with the same two methods can stand in for it (the GPU check runs the
    averagers without Horovod that way): ``start(buffer, name, process_set)`` begins summing
    ``buffer`` in place and returns a handle; ``wait(handle, deadline)`` returns once the sum
    is in ``buffer`` and may be read by work queued on the current stream afterwards."""

    def start(self, buffer: torch.Tensor, name: str, process_set):
        import horovod.torch as hvd

        return hvd.allreduce_async_(buffer, op=hvd.Sum, name=name, process_set=process_set)

    def wait(self, handle, deadline: Optional[float]):
        return wait(handle, deadline)


def allgather_object(obj, process_set, name: str = "hvd_hier.config",
                     deadline: Optional[float] = None) -> list:
    """Gather one picklable object from every rank of ``process_set`` (in rank order).

    One allgather: each rank sends its pickle behind an 8-byte length, and the concatenation
    is read back record by record. Past ``deadline`` (``time.monotonic()``), ``StallError``.
    """
    import horovod.torch as hvd

    data = pickle.dumps(obj)
    record = torch.frombuffer(bytearray(len(data).to_bytes(8, "little") + data), dtype=torch.uint8)
    handle = hvd.allgather_async(record, name=name, process_set=process_set)
    gathered = wait(handle, deadline).numpy().tobytes()
    out, start = [], 0
    while start < len(gathered):
        n = int.from_bytes(gathered[start:start + 8], "little")
        out.append(pickle.loads(gathered[start + 8:start + 8 + n]))
        start += 8 + n
    return out


def broadcast_object(obj, root_rank: int, process_set, name: str,
                     deadline: Optional[float] = None):
    """``obj`` of ``root_rank`` (a global rank of ``process_set``) on every rank of the set:
    two broadcasts, the pickle's length and the pickle. Past ``deadline``, ``StallError``."""
    import horovod.torch as hvd

    mine = hvd.rank() == root_rank
    data = pickle.dumps(obj) if mine else b""
    length = torch.tensor([len(data)], dtype=torch.int64)
    length = wait(hvd.broadcast_async(length, root_rank, name=f"{name}.length",
                                      process_set=process_set), deadline)
    n = int(length.item())
    buffer = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if mine
              else torch.zeros(n, dtype=torch.uint8))
    received = wait(hvd.broadcast_async(buffer, root_rank, name=name, process_set=process_set),
                    deadline)
    return obj if mine else pickle.loads(received.numpy().tobytes())


def cpu_copy(obj):
    """``obj`` (tensors inside dicts, lists and tuples) with a compact CPU copy of every
    tensor: what is sent to other ranks (a view of flat storage would pickle its whole
    buffer, and a CUDA tensor would unpickle onto the sender's device)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj
