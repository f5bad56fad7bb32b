"""Helpers shared by the worker scripts (run under horovodrun, one process per rank)."""

import faulthandler
import sys
import traceback
import warnings

import torch

import hvd_hier  # noqa: F401  (before hvd.init(): enables dynamic process sets)
import horovod.torch as hvd

torch.set_num_threads(1)
faulthandler.enable()
import signal as _signal
faulthandler.register(_signal.SIGTERM, chain=True)


def init():
    hvd.init()
    return hvd.rank(), hvd.size()


def report(name):
    print(f"PASS {name}", flush=True)


def expect_error(exc_type, message, fn, *args, **kwargs):
    """Call fn; assert it raises exc_type whose text equals (or starts with '...'-less) message."""
    try:
        fn(*args, **kwargs)
    except exc_type as exc:
        text = str(exc)
        assert text == message, f"wrong message:\n  got:      {text}\n  expected: {message}"
        return exc
    raise AssertionError(f"expected {exc_type.__name__}: {message}")


def expect_warning(message_part, fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    texts = [str(w.message) for w in caught]
    assert any(message_part in t for t in texts), f"no warning containing {message_part!r}: {texts}"
    return result


def main(fn):
    """Run fn() then wait for every rank; on failure print the traceback with the rank and
    exit non-zero."""
    try:
        fn()
        # Horovod shuts down for everybody once one rank exits: wait for the slowest rank.
        hvd.allreduce(torch.zeros(1), name="worker.done")
    except BaseException:
        rank = hvd.rank() if hvd.is_initialized() else -1
        print(f"FAIL on rank {rank}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        sys.exit(1)
