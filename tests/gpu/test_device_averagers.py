"""hvd_hier's two averagers (packed buckets, flat storage) on the device with a stand-in
collective (standin.PeersSum): several buckets in flight, the kernels on the current stream,
the sum on a stream of its own. Every element must become x + (P - 1) / P, bit for bit what
the same averager computes on the CPU through the CPU loop."""

import random

import pytest
import torch

from gpu_device import DEVICE, KIND, cpu_path, synchronize
from hvd_hier.reduce.buckets import BucketAverager
from hvd_hier.reduce.flat import FlatAverager
from standin import PeersSum

P = 4
SHAPES = [(64, 3, 7, 7), (64,), (64,), (1,), (256, 64, 1, 1), (0,), (1000, 33), (1000,), (5, 5, 5)]


def model(dtype, seed, device):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).to(device) for s in SHAPES]


def averaged(kind, tensors, cap, in_flight, stream=None):
    collective = PeersSum(P)
    if kind == "buckets":
        avg = BucketAverager(tensors, cap, max_in_flight=in_flight, collective=collective)
    else:
        avg = FlatAverager(tensors, cap, max_in_flight=in_flight, collective=collective)
    if stream is not None:
        with torch.cuda.stream(stream):
            moved = avg.average(None, P, "test")
        stream.synchronize()
    else:
        moved = avg.average(None, P, "test")
    synchronize()
    return avg, collective, moved


@pytest.mark.parametrize("kind", ["buckets", "flat"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("cap,in_flight", [(1 << 30, 1), (40_000, 2), (10_000, 3)])
def test_averagers_on_the_device(kind, dtype, cap, in_flight):
    seed = random.randrange(2**31)
    tensors = model(dtype, seed, DEVICE)
    before = [t.detach().cpu().clone() for t in tensors]
    avg, collective, moved = averaged(kind, tensors, cap, in_flight)
    assert moved == avg.nbytes and len(collective.started) == len(avg.buckets) >= 1
    if cap == 10_000:
        assert len(avg.buckets) > 3  # several buckets, more than in flight
    with cpu_path():
        ref_tensors = model(dtype, seed, "cpu")
        averaged(kind, ref_tensors, cap, in_flight)
    for got, want, x in zip(tensors, ref_tensors, before):
        assert torch.equal(got.detach().cpu(), want), "device and CPU averagers differ"
        closed_form = x.double() + (P - 1) / P
        tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
        assert torch.allclose(got.detach().cpu().double(), closed_form, rtol=tol, atol=tol)


@pytest.mark.skipif(KIND != "cuda", reason="needs a GPU (a non-default current stream)")
@pytest.mark.parametrize("kind", ["buckets", "flat"])
def test_averaging_on_a_side_stream(kind):
    """The user's current stream is a side stream: packing, the stand-in's wait and the
    unpack/scale all follow it."""
    tensors = model(torch.float32, 7, DEVICE)
    before = [t.detach().cpu().clone() for t in tensors]
    side = torch.cuda.Stream()
    avg, _, _ = averaged(kind, tensors, 10_000, 2, stream=side)
    for got, x in zip(tensors, before):
        assert torch.allclose(got.detach().cpu(), x + 0.75, rtol=1e-6, atol=1e-6)


def test_memory_passes_scale_every_tensor():
    tensors = model(torch.float32, 3, DEVICE)
    before = [t.detach().cpu().clone() for t in tensors]
    BucketAverager(tensors, 10_000, collective=PeersSum(P)).memory_passes(0.25)
    FlatAverager(tensors, 10_000, collective=PeersSum(P)).memory_passes(4.0)
    synchronize()
    assert all(torch.equal(t.detach().cpu(), x) for t, x in zip(tensors, before))
