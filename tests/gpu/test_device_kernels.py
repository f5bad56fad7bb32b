"""The fused pack/unpack kernels on the device (CUDA, or the CUDA code emulated on the CPU),
against the CPU loop bit for bit and a float64 reference, on random inputs with the outputs
poisoned first so that an unwritten element shows. Part of the GPU check (scripts/gpu_check.sh)."""

import random

import pytest
import torch

from gpu_device import C, DEVICE, KIND, cpu_path, synchronize

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Around the vector step (2, 4 or 8 lanes) and a block (CUDA_CHUNK_BYTES of the narrower
# dtype: 2048 float64, 4096 float32, 8192 16-bit elements) and its multiples.
_B = C.CUDA_CHUNK_BYTES
SIZES = [0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 1023, 1025, _B // 8 - 1, _B // 8 + 1, _B // 4 - 1,
         _B // 4, _B // 4 + 1, _B // 2 - 1, _B // 2 + 1, 3 * _B // 4 + 1, _B + 1]
# float64 reference tolerance by the lowest precision involved: ||out - ref|| / ||ref||
REL_TOL = {torch.float64: 1e-15, torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}
cuda_only = pytest.mark.skipif(KIND != "cuda", reason="needs a GPU (tests CUDA streams and errors)")


def rand(sizes, dtype, seed, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64).to(dtype).to(device) for n in sizes]


def poisoned(n, dtype, device=DEVICE):
    return torch.full((n,), float("nan"), dtype=dtype, device=device)


def coarsest(*dtypes):
    return max((REL_TOL[d] for d in dtypes))


def rel_err(got, ref):
    got, ref = got.double().cpu(), ref.double().cpu()
    return ((got - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def ref_pack(tensors, scale):
    flat = torch.cat([t.detach().cpu().double().reshape(-1) for t in tensors])
    return flat * scale


def check_pack(tensors, bucket_dtype, scale, offset=3, slack=5):
    """Pack on the device into a poisoned bucket, then compare with the CPU loop and float64."""
    total = sum(t.numel() for t in tensors)
    bucket = poisoned(offset + total + slack, bucket_dtype)
    assert C.pack(tensors, bucket, scale, offset) == total
    synchronize()
    got = bucket.cpu()
    assert torch.isnan(got[:offset]).all() and torch.isnan(got[offset + total:]).all(), \
        "pack wrote outside its range"
    assert not torch.isnan(got[offset:offset + total]).any(), "pack left elements unwritten"
    with cpu_path():
        cpu_bucket = poisoned(offset + total + slack, bucket_dtype, "cpu")
        C.pack([t.cpu() for t in tensors], cpu_bucket, scale, offset)
    assert torch.equal(got[offset:offset + total], cpu_bucket[offset:offset + total])
    if total:
        ref = ref_pack(tensors, scale)
        assert rel_err(got[offset:offset + total], ref) < coarsest(bucket_dtype, tensors[0].dtype)
    return bucket


def check_unpack(bucket, like, scale, offset=3, shift=0):
    """Unpack on the device into poisoned tensors (each `shift` elements into its storage),
    then compare with the CPU loop and float64."""
    outs = [poisoned(t.numel() + shift, t.dtype)[shift:].reshape(t.shape) for t in like]
    total = sum(t.numel() for t in like)
    assert C.unpack(bucket, outs, scale, offset) == total
    synchronize()
    with cpu_path():
        cpu_outs = [poisoned(t.numel(), t.dtype, "cpu").reshape(t.shape) for t in like]
        C.unpack(bucket.cpu(), cpu_outs, scale, offset)
    flat_ref = bucket.cpu()[offset:offset + total].double() * scale
    at = 0
    for got, want in zip(outs, cpu_outs):
        got = got.cpu()
        assert not torch.isnan(got).any(), "unpack left elements unwritten"
        assert torch.equal(got, want)
        n = got.numel()
        if n:
            assert rel_err(got.reshape(-1), flat_ref[at:at + n]) < coarsest(bucket.dtype, got.dtype)
        at += n
    return outs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bucket_dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1 / 3])
def test_every_dtype_pair_matches_cpu_and_float64(dtype, bucket_dtype, scale):
    seed = random.randrange(2**31)
    tensors = rand(SIZES, dtype, seed)
    for offset in (0, 3):  # a 16-byte aligned bucket start and a misaligned one
        bucket = check_pack(tensors, bucket_dtype, scale, offset)
        check_unpack(bucket, tensors, 1 / scale, offset)


@pytest.mark.parametrize("dtype,bucket_dtype", [(torch.float32, torch.float32),
                                                (torch.float32, torch.bfloat16),
                                                (torch.bfloat16, torch.bfloat16),
                                                (torch.float16, torch.float32),
                                                (torch.float64, torch.float16)])
@pytest.mark.parametrize("shift", [0, 1, 2, 3, 5, 7])
@pytest.mark.parametrize("offset", [0, 1, 2, 4, 6])
def test_misaligned_storage_offsets(dtype, bucket_dtype, shift, offset):
    """Tensors that start `shift` elements into their storage, and buckets written from
    `offset`: every combination of aligned, vector-compatible and scalar-only pieces."""
    seed = random.randrange(2**31)
    sizes = [4097, 33, 8, 1, 12_289]
    bases = rand([n + shift for n in sizes], dtype, seed)
    tensors = [b[shift:] for b in bases]
    assert all(t.storage_offset() == shift for t in tensors)
    bucket = check_pack(tensors, bucket_dtype, 0.5, offset)
    outs = check_unpack(bucket, tensors, 2.0, offset, shift)
    assert all(t.storage_offset() == shift for t in outs)


def test_many_tensors_per_table_and_empty_ones():
    """More tensors than one launch's table (MAX_TENSORS_PER_LAUNCH), a third of them empty."""
    rng = random.Random()
    n = 2 * C.MAX_TENSORS_PER_LAUNCH + 7
    sizes = [0 if i % 3 == 0 else rng.randrange(1, 300) for i in range(n)]
    tensors = rand(sizes, torch.float32, rng.randrange(2**31))
    bucket = check_pack(tensors, torch.float32, 1.0, 0)
    check_unpack(bucket, tensors, 1.0, 0)
    bucket16 = check_pack(tensors, torch.bfloat16, 0.25, 1)
    check_unpack(bucket16, tensors, 4.0, 1)


def test_empty_inputs_write_nothing():
    bucket = poisoned(16, torch.float32)
    assert C.pack([], bucket) == 0
    assert C.pack(rand([0, 0], torch.float32, 0), bucket, 0.5, 16) == 0
    assert C.unpack(bucket, [torch.empty(0, device=DEVICE)]) == 0
    synchronize()
    assert torch.isnan(bucket.cpu()).all()


def test_resnet50_sized_round_trip_is_exact():
    """ResNet-50's 161 parameter shapes (two launches), float32 through a float32 bucket and
    back: bit for bit (a plain pack and unpack are copies)."""
    from shapes import MODELS

    shapes = MODELS["resnet50"] if KIND == "cuda" else MODELS["resnet18"][:20]
    g = torch.Generator().manual_seed(random.randrange(2**31))
    tensors = [torch.randn(s, generator=g).to(DEVICE) for s in shapes]
    total = sum(t.numel() for t in tensors)
    bucket = poisoned(total, torch.float32)
    C.pack(tensors, bucket)
    outs = [poisoned(t.numel(), t.dtype).reshape(t.shape) for t in tensors]
    C.unpack(bucket, outs)
    synchronize()
    assert all(torch.equal(a, b) for a, b in zip(outs, tensors))


@cuda_only
def test_kernels_run_on_the_current_stream():
    """On a side stream, a long sleep then a fill then pack/unpack: the kernels must queue
    behind the fill (the current stream), not run at once on the default stream."""
    n = 1 << 20
    x = torch.zeros(n, device="cuda")
    bucket = poisoned(n, torch.float32)
    out = poisoned(n, torch.float32)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # about 50 ms of GPU time
        x.fill_(3.0)
        C.pack([x], bucket, 2.0)
        C.unpack(bucket, [out], 0.5)
    side.synchronize()
    assert torch.equal(bucket.cpu(), torch.full((n,), 6.0))
    assert torch.equal(out.cpu(), torch.full((n,), 3.0))


@cuda_only
def test_device_errors_name_the_tensors():
    bucket = torch.empty(8, device="cuda")
    with pytest.raises(ValueError) as info:
        C.pack([torch.randn(2)], bucket)
    assert str(info.value) == "pack: tensors[0] is on cpu but the bucket is on cuda:0"
    with pytest.raises(ValueError) as info:
        C.unpack(bucket, [torch.empty(2, device="cuda"), torch.empty(2)])
    assert str(info.value) == "unpack: tensors[1] is on cpu but the bucket is on cuda:0"
