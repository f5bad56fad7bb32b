"""The fused pack/unpack kernels against a pure-PyTorch reference (torch.cat, scale, split)."""

import pytest
import torch

from kernel_isa import ISAS
from hvd_hier.comm.extension import extension
from pairwise import pairwise_params

C = extension()
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Sizes around vector widths (4, 8, 16 lanes), a CUDA block of float32 (CUDA_CHUNK_BYTES / 4
# elements; 16-bit types: twice that) and the CPU chunk (CHUNK_ELEMS), from the extension's
# own constants.
_BLOCK, _CHUNK = C.CUDA_CHUNK_BYTES // 4, C.CHUNK_ELEMS
SIZES = [0, 1, 3, 7, 8, 15, 16, 17, 31, _BLOCK - 1, _BLOCK, _BLOCK + 1, 2 * _BLOCK + 1,
         _CHUNK - 1, _CHUNK, _CHUNK + 1, 100_003]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and C.built_with_cuda() else [])


def ref_pack(tensors, bucket_dtype, scale):
    if not tensors:
        return torch.empty(0, dtype=bucket_dtype)
    acc = torch.float64 if torch.float64 in (bucket_dtype, tensors[0].dtype) else torch.float32
    flat = torch.cat([t.reshape(-1).to(acc) for t in tensors])
    return (flat * scale if scale != 1.0 else flat).to(bucket_dtype)


def ref_unpack(bucket, tensors, scale):
    acc = torch.float64 if torch.float64 in (bucket.dtype, tensors[0].dtype) else torch.float32
    flat = bucket.to(acc)
    flat = flat * scale if scale != 1.0 else flat
    parts = torch.split(flat, [t.numel() for t in tensors])
    return [p.reshape(t.shape).to(t.dtype) for p, t in zip(parts, tensors)]


def make(sizes, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64).to(dtype).to(device) for n in sizes]


# Every pair of (instruction-set mode, dtype, bucket dtype, scale) in some case.
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(*pairwise_params({"isa": ISAS, "dtype": DTYPES, "bucket_dtype": DTYPES,
                                           "scale": [1.0, 0.25, 1 / 3]}), indirect=["isa"])
def test_pack_and_unpack_match_reference(device, isa, dtype, bucket_dtype, scale):
    tensors = make(SIZES, dtype, device)
    total = sum(SIZES)
    bucket = torch.full((total + 5,), -7.0, dtype=bucket_dtype, device=device)
    assert C.pack(tensors, bucket, scale, 5) == total
    expected = ref_pack([t.cpu() for t in tensors], bucket_dtype, scale)
    assert torch.equal(bucket[5:].cpu(), expected)
    assert torch.equal(bucket[:5].cpu(), torch.full((5,), -7.0, dtype=bucket_dtype))  # untouched

    outs = [torch.empty_like(t) for t in tensors]
    assert C.unpack(bucket, outs, scale, 5) == total
    for got, want in zip(outs, ref_unpack(bucket[5:].cpu(), [t.cpu() for t in tensors], scale)):
        assert torch.equal(got.cpu(), want)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("device", DEVICES)
def test_plain_round_trip_is_exact(device):
    tensors = make([5, 0, 1, 33000, 9], torch.float32, device)
    shapes = [torch.randn(5), torch.randn(0), torch.randn(1), torch.randn(33000), torch.randn(9)]
    tensors = [t.reshape(s.shape) for t, s in zip(tensors, shapes)]
    bucket = torch.empty(sum(t.numel() for t in tensors), device=device)
    C.pack(tensors, bucket)
    outs = [torch.zeros_like(t) for t in tensors]
    C.unpack(bucket, outs)
    assert all(torch.equal(a, b) for a, b in zip(outs, tensors))


@pytest.mark.usefixtures("isa")
def test_more_tensors_than_one_table():
    n = C.MAX_TENSORS_PER_LAUNCH * 2 + 7
    tensors = make([(i % 5) + 1 for i in range(n)], torch.float32, "cpu")
    bucket = torch.empty(sum(t.numel() for t in tensors))
    C.pack(tensors, bucket, 2.0)
    assert torch.equal(bucket, ref_pack(tensors, torch.float32, 2.0))
    outs = [torch.empty_like(t) for t in tensors]
    C.unpack(bucket, outs, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(outs, tensors))


@pytest.mark.usefixtures("isa")
def test_multidimensional_and_empty_lists():
    tensors = [torch.randn(3, 4, 5), torch.randn(2, 1), torch.randn(1, 1, 1)]
    bucket = torch.empty(63)
    C.pack(tensors, bucket)
    assert torch.equal(bucket, torch.cat([t.flatten() for t in tensors]))
    assert C.pack([], bucket) == 0
    assert C.unpack(bucket, []) == 0


def expect(message, fn, *args):
    with pytest.raises(ValueError) as info:
        fn(*args)
    assert str(info.value) == message


def test_errors_name_the_problem():
    bucket = torch.empty(10)
    t = torch.randn(4, 4)
    expect("pack: tensors[1] (shape [4, 2]) is not contiguous; pass t.contiguous() and copy back, "
           "or make it contiguous", C.pack, [torch.randn(2), t[:, ::2]], torch.empty(20))
    expect("pack: tensors[1] has dtype Double but tensors[0] has Float; use one bucket per dtype",
           C.pack, [torch.randn(2), torch.randn(2, dtype=torch.float64)], bucket)
    expect("unpack: the tensors hold 16 elements, which do not fit in the bucket's 10 from offset 0",
           C.unpack, bucket, [t])
    expect("pack: the tensors hold 4 elements, which do not fit in the bucket's 10 from offset 8",
           C.pack, [torch.randn(4)], bucket, 1.0, 8)
    expect("pack: tensors[0] dtype Int is not supported (float32, float64, float16, bfloat16)",
           C.pack, [torch.zeros(2, dtype=torch.int32)], bucket)
    expect("pack: bucket dtype Long is not supported (float32, float64, float16, bfloat16)",
           C.pack, [], torch.zeros(2, dtype=torch.int64))
    expect("pack: bucket must be contiguous", C.pack, [torch.randn(2)], torch.empty(10)[::2])
    expect("pack: offset must be >= 0, got -1", C.pack, [torch.randn(2)], bucket, 1.0, -1)
    expect("pack: bucket device meta is not supported (cpu, cuda)", C.pack, [], torch.empty(2, device="meta"))
    expect("pack: tensors[0] is on meta but the bucket is on cpu", C.pack, [torch.empty(2, device="meta")], bucket)


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="needs 2 CPUs")
def test_the_cpu_loop_runs_on_torchs_threads():
    """at::parallel_for is a header template: compiled without OpenMP it would run on one
    thread whatever torch.get_num_threads() says."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert C.cpu_parallel_threads(64) == 2
        torch.set_num_threads(1)
        assert C.cpu_parallel_threads(64) == 1
    finally:
        torch.set_num_threads(before)


# (src dtype size, dst dtype size, src address, dst address, n) -> (head, vectors, lanes)
SPLITS = [
    ((4, 4, 0, 0, 100), (0, 25, 4)),        # both aligned: all vectors
    ((4, 4, 4, 20, 100), (3, 24, 4)),       # both 4 bytes past a boundary: 3 scalars first
    ((4, 4, 4, 24, 100), (100, 0, 4)),      # misaligned relative to each other: all scalar
    ((4, 2, 0, 8, 100), (4, 12, 8)),        # float -> bfloat16: aligned together 4 elements in
    ((2, 4, 8, 0, 100), (4, 12, 8)),        # and back
    ((2, 2, 2, 2, 100), (7, 11, 8)),        # 16-bit: 7 scalars, then steps of 8
    ((2, 2, 1, 1, 100), (100, 0, 8)),       # an element off its natural boundary
    ((8, 2, 0, 0, 100), (0, 12, 8)),        # float64 -> float16: four 16-byte loads per store
    ((4, 4, 4, 4, 2), (2, 0, 4)),           # shorter than the head
    ((4, 4, 0, 0, 3), (0, 0, 4)),           # aligned but shorter than one step
    ((4, 4, 0, 0, 0), (0, 0, 4)),           # empty
]


@pytest.mark.parametrize("args,expected", SPLITS)
def test_vector_split_closed_form(args, expected):
    src_size, dst_size, src, dst, n = args
    assert C.vector_split(src, src_size, dst, dst_size, n) == expected


def test_vector_split_refuses_odd_element_sizes():
    expect("vector_split: element sizes must be 2, 4 or 8 bytes, got 3 and 4",
           C.vector_split, 0, 3, 0, 4, 10)
    expect("vector_split: element sizes must be 2, 4 or 8 bytes, got 4 and 0",
           C.vector_split, 0, 4, 0, 0, 10)


@pytest.mark.parametrize("sizes", [(4, 4), (4, 2), (2, 4), (2, 2), (8, 2), (2, 8), (8, 4), (8, 8)])
def test_vector_split_is_aligned_maximal_and_earliest(sizes):
    """For every alignment of both sides: the vector steps are 16-byte aligned on both sides,
    the tail is shorter than one step, and no earlier head would have aligned both."""
    ss, ds = sizes
    lanes = C.VECTOR_BYTES // min(ss, ds)
    for src in range(32):
        for dst in range(32):
            for n in (1, lanes - 1, lanes, 3 * lanes + 1, 1000):
                head, vectors, got_lanes = C.vector_split(src, ss, dst, ds, n)
                assert got_lanes == lanes
                aligned = [h for h in range(min(lanes, n))
                           if (src + h * ss) % 16 == 0 and (dst + h * ds) % 16 == 0]
                if aligned:
                    assert head == aligned[0], (src, dst, n)
                    assert vectors == (n - head) // lanes
                    assert n - head - vectors * lanes < lanes
                else:
                    assert (head, vectors) == (n, 0), (src, dst, n)
