"""A stand-in for Horovod's allreduce, for running the averagers on one device without Horovod.

``PeersSum(ranks=P)`` behaves as if P - 1 other ranks held this rank's tensors plus one:
the sum of a buffer x is P * x + (P - 1), so an averaging turns every element x into
x + (P - 1) / P. On a GPU the sum runs asynchronously on a stream of its own that first waits
for the current stream (where the buffer was packed), and ``wait`` blocks the host until it
is done, as Horovod's ``synchronize`` does: the averagers' stream handling is exercised.
"""

import torch


class PeersSum:
    def __init__(self, ranks: int):
        self.ranks = ranks
        self.started = []  # (name, numel, dtype) of every reduction, in order
        self._stream = None

    def start(self, buffer, name, process_set):
        self.started.append((name, buffer.numel(), buffer.dtype))
        if buffer.device.type != "cuda":
            buffer.mul_(self.ranks).add_(self.ranks - 1)
            return None
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=buffer.device)
        self._stream.wait_stream(torch.cuda.current_stream(buffer.device))
        with torch.cuda.stream(self._stream):
            torch.cuda._sleep(2_000_000)  # a slow link: readers that do not wait see the packing
            buffer.mul_(self.ranks).add_(self.ranks - 1)
            done = torch.cuda.Event()
            done.record()
        buffer.record_stream(self._stream)
        return done

    def wait(self, handle, deadline):
        if handle is not None:
            handle.synchronize()
