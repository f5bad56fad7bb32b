"""The compressed-delta kernels on the device (CUDA, or the CUDA code emulated on the CPU) against
the CPU loop, byte for byte: the rule is exact, and tests/unit/test_codec_kernels.py holds the CPU
loop to a pure-PyTorch reference of the wire format. Outputs are poisoned first, so that an
unwritten byte shows. Part of the GPU check (scripts/gpu_check.sh)."""

import random

import pytest
import torch

from gpu_device import C, DEVICE, KIND, cpu_path, synchronize

CODECS = ["fp16", "bf16", "int8", "int4", "int2"]
REDUCED = ["fp16", "bf16", "int8"]  # the codecs reduce_encoded takes
TOPK = [(41, "int2"), (205, "int8"), (103, "int4"), (2048, "int2")]  # (slots, values)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
CHUNK = C.CODEC_CHUNK
# around the chunk (one record, one CUDA block), with empty tensors between others
SIZES = [0, 1, 5, CHUNK - 1, 0, CHUNK + 1, 3 * CHUNK + 5, 17, 0]
cuda_only = pytest.mark.skipif(KIND != "cuda", reason="needs a GPU (tests CUDA streams and errors)")


def rand(sizes, dtype, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(n, generator=g, dtype=torch.float64)).to(dtype) for n in sizes]


def on_device(tensors):
    return [t.clone().to(DEVICE) for t in tensors]


def poisoned_bytes(n, device=DEVICE):
    return torch.full((n,), 0xAB, dtype=torch.uint8, device=device)


def same_bits(a, b):
    a, b = a.cpu().contiguous(), b.cpu().contiguous()
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def inputs(dtype, seed, sizes=SIZES):
    """Parameters, anchors a small step away (its size varying by tensor) and residuals (CPU)."""
    xs = rand(sizes, dtype, seed)
    steps = [s * 10.0 ** ((i % 4) - 3) for i, s in enumerate(rand(sizes, torch.float64, seed + 1))]
    anchors = [(x.double() - s).to(dtype) for x, s in zip(xs, steps)]
    residuals = rand(sizes, torch.float32, seed + 2, 1e-4)
    return xs, anchors, residuals


def encode_both(codec, xs, anchors, residuals):
    """encode_delta on the device and with the CPU loop: (device out, CPU out, device
    residuals, CPU residuals)."""
    n = sum(t.numel() for t in xs)
    out, dev_res = poisoned_bytes(C.encoded_bytes(codec, n)), on_device(residuals)
    assert C.encode_delta(on_device(xs), on_device(anchors), dev_res, out, codec) == n
    synchronize()
    with cpu_path():
        cpu_out, cpu_res = poisoned_bytes(out.numel(), "cpu"), [r.clone() for r in residuals]
        C.encode_delta(xs, anchors, cpu_res, cpu_out, codec)
    return out, cpu_out, dev_res, cpu_res


@pytest.mark.parametrize("with_residuals", [False, True], ids=["plain", "residuals"])
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_encode_delta_matches_cpu(dtype, codec, with_residuals):
    xs, anchors, residuals = inputs(dtype, random.randrange(2**31))
    out, cpu_out, dev_res, cpu_res = encode_both(codec, xs, anchors, residuals if with_residuals else [])
    assert same_bits(out, cpu_out)
    assert all(same_bits(a, b) for a, b in zip(dev_res, cpu_res))


@pytest.mark.parametrize("count", [1, 3, 8])
@pytest.mark.parametrize("codec", REDUCED)
def test_reduce_encoded_matches_cpu(codec, count):
    seed = random.randrange(2**31)
    bufs = [encode_both(codec, *inputs(torch.float32, seed + 3 * k)[:2], [])[1] for k in range(count)]
    src = torch.cat(bufs)
    for scale in (1.0 / count, -1.0):
        dst = poisoned_bytes(bufs[0].numel())
        C.reduce_encoded(src.to(DEVICE), dst, codec, count, scale)
        synchronize()
        with cpu_path():
            cpu_dst = poisoned_bytes(dst.numel(), "cpu")
            C.reduce_encoded(src, cpu_dst, codec, count, scale)
        assert same_bits(dst, cpu_dst)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_apply_delta_and_decode_into_match_cpu(dtype, codec):
    xs, anchors, _ = inputs(dtype, random.randrange(2**31))
    src = encode_both(codec, xs, anchors, [])[1]
    nan = float("nan")

    dev_x, dev_a = [torch.full_like(a, nan) for a in on_device(anchors)], on_device(anchors)
    C.apply_delta(src.to(DEVICE), dev_x, dev_a, codec)
    dev_t = [torch.full_like(a, nan) for a in on_device(anchors)]
    C.decode_into(src.to(DEVICE), dev_t, codec, -1.0)
    synchronize()
    with cpu_path():
        cpu_x, cpu_a = [torch.full_like(a, nan) for a in anchors], [a.clone() for a in anchors]
        C.apply_delta(src, cpu_x, cpu_a, codec)
        cpu_t = [torch.full_like(a, nan) for a in anchors]
        C.decode_into(src, cpu_t, codec, -1.0)
    assert all(same_bits(a, b) for a, b in zip(dev_x, cpu_x))
    assert all(same_bits(a, b) for a, b in zip(dev_a, cpu_x))  # the anchors end equal to x
    assert all(same_bits(a, b) for a, b in zip(dev_t, cpu_t))


@pytest.mark.parametrize("anchored", [True, False], ids=["anchored", "gradient"])
@pytest.mark.parametrize("codec", ["int4", "int2"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_apply_sum_matches_cpu(dtype, codec, anchored):
    seed = random.randrange(2**31)
    src = torch.cat([encode_both(codec, *inputs(torch.float32, seed + 3 * k)[:2], [])[1]
                     for k in range(3)])
    anchors = inputs(dtype, seed + 99)[1]
    dev_x, dev_a = [torch.full_like(a, float("nan")) for a in on_device(anchors)], on_device(anchors)
    C.apply_sum(src.to(DEVICE), 3, dev_x, dev_a if anchored else [], codec, 1 / 3)
    synchronize()
    with cpu_path():
        cpu_x, cpu_a = [torch.full_like(a, float("nan")) for a in anchors], [a.clone() for a in anchors]
        C.apply_sum(src, 3, cpu_x, cpu_a if anchored else [], codec, 1 / 3)
    assert all(same_bits(a, b) for a, b in zip(dev_x, cpu_x))
    assert all(same_bits(a, b) for a, b in zip(dev_a, cpu_a))


def topk_both(slots, values, xs, anchors, residuals):
    """encode_topk on the device and with the CPU loop, as encode_both."""
    n = sum(t.numel() for t in xs)
    out, dev_res = poisoned_bytes(C.topk_encoded_bytes(n, slots, values)), on_device(residuals)
    assert C.encode_topk(on_device(xs), on_device(anchors), dev_res, out, slots, values) == n
    synchronize()
    with cpu_path():
        cpu_out, cpu_res = poisoned_bytes(out.numel(), "cpu"), [r.clone() for r in residuals]
        C.encode_topk(xs, anchors, cpu_res, cpu_out, slots, values)
    return out, cpu_out, dev_res, cpu_res


@pytest.mark.parametrize("slots,values", TOPK)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_encode_and_apply_match_cpu(dtype, slots, values):
    seed = random.randrange(2**31)
    xs, anchors, residuals = inputs(dtype, seed)
    out, cpu_out, dev_res, cpu_res = topk_both(slots, values, xs, anchors, residuals)
    assert same_bits(out, cpu_out)
    assert all(same_bits(a, b) for a, b in zip(dev_res, cpu_res))
    src = torch.cat([cpu_out] + [topk_both(slots, values, *inputs(dtype, seed + k)[:2], [])[1]
                                 for k in (1, 2)])
    dev_x, dev_a = [torch.full_like(a, float("nan")) for a in on_device(anchors)], on_device(anchors)
    C.apply_topk(src.to(DEVICE), 3, dev_x, dev_a, slots, values, 1 / 3)
    synchronize()
    with cpu_path():
        cpu_x, cpu_a = [torch.full_like(a, float("nan")) for a in anchors], [a.clone() for a in anchors]
        C.apply_topk(src, 3, cpu_x, cpu_a, slots, values, 1 / 3)
    assert all(same_bits(a, b) for a, b in zip(dev_x, cpu_x))
    assert all(same_bits(a, b) for a, b in zip(dev_a, cpu_a))


def test_resnet50_sized_int8_encode_matches_cpu():
    """ResNet-50's 161 parameter shapes in calls of at most MAX_TENSORS_PER_DELTA_LAUNCH tensors
    (fewer shapes where the CUDA code is emulated), int8 with residuals."""
    from shapes import MODELS

    shapes = MODELS["resnet50"] if KIND == "cuda" else MODELS["resnet18"][:20]
    sizes = [torch.Size(s).numel() for s in shapes]
    step = C.MAX_TENSORS_PER_DELTA_LAUNCH
    for first in range(0, len(sizes), step):
        xs, anchors, residuals = inputs(torch.float32, random.randrange(2**31), sizes[first:first + step])
        out, cpu_out, dev_res, cpu_res = encode_both("int8", xs, anchors, residuals)
        assert same_bits(out, cpu_out)
        assert all(same_bits(a, b) for a, b in zip(dev_res, cpu_res))


@cuda_only
def test_codec_kernels_run_on_the_current_stream():
    """On a side stream, a long sleep, then a fill, then encode and apply: the kernels must queue
    behind the fill (the current stream), not run at once on the default stream."""
    n = 1 << 20
    x, a = torch.zeros(n, device="cuda"), torch.zeros(n, device="cuda")
    out = poisoned_bytes(C.encoded_bytes("bf16", n))
    y = torch.full((n,), float("nan"), device="cuda")
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # about 50 ms of GPU time
        x.fill_(3.0)
        C.encode_delta([x], [a], [], out, "bf16")
        C.apply_delta(out, [y], [a], "bf16")
    side.synchronize()
    assert torch.equal(y.cpu(), torch.full((n,), 3.0))
    assert torch.equal(a.cpu(), torch.full((n,), 3.0))


@cuda_only
def test_codec_device_errors_name_the_tensors():
    out = poisoned_bytes(4096)
    with pytest.raises(ValueError) as info:
        C.encode_delta([torch.zeros(2, device="cuda")], [torch.zeros(2)], [], out, "fp16")
    assert str(info.value) == "encode_delta: anchors[0] is on cpu but out is on cuda:0"
    with pytest.raises(ValueError) as info:
        C.reduce_encoded(out, poisoned_bytes(4096, "cpu"), "fp16", 1)
    assert str(info.value) == "reduce_encoded: dst is on cpu but src is on cuda:0"
