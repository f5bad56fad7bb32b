"""The compressed-delta kernels (encode_delta, reduce_encoded, apply_delta, decode_into) against a
pure-PyTorch reference of the wire format, byte for byte: the encoding rule is exact (float32
arithmetic, one rounding per operation, round half to even), so the CPU loops, the CUDA kernels'
code run on the CPU and the reference must agree on every bit."""

import re

import pytest
import torch

from hvd_hier.comm.extension import extension
from kernel_isa import ISAS
from pairwise import pairwise_params
from wire import WIRE, ref_decode, ref_encode, ref_reduce, ref_sum

C = extension()
CHUNK = C.CODEC_CHUNK
MAX_TENSORS = C.MAX_TENSORS_PER_DELTA_LAUNCH
CODECS = ["fp16", "bf16", "int8", "int4", "int2"]
REDUCED = ["fp16", "bf16", "int8"]  # the codecs reduce_encoded takes
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
INT8_HEADER = 16
POISON = 0xAB

# Tensor sizes of one call, around the chunk (CODEC_CHUNK) and the CPU's vector widths (8 and
# 16 lanes), with empty tensors between others; "tasks" spans more than one CPU task
# (CHUNK_ELEMS elements) so that at::parallel_for can split it.
LAYOUTS = {
    "none": [],
    "one": [1],
    "chunk-1": [CHUNK - 1],
    "chunk": [CHUNK],
    "chunk+1": [CHUNK + 1],
    "3chunks+5": [3 * CHUNK + 5],
    "small": [0, 1, 7, 8, 9, 0, 0, 15, 16, 17, 31, 33, 0, 1],
    "straddle": [5, CHUNK - 3, 0, 7, CHUNK, 1, 0],
    "full_table": [(i * 37) % 101 for i in range(MAX_TENSORS)],
}
TASKS = [C.CHUNK_ELEMS + CHUNK + 3]


# ---- the reference ------------------------------------------------------------------------------

def acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def flat(tensors, dtype):
    return torch.cat([t.reshape(-1).to(dtype) for t in tensors]) if tensors else torch.empty(0, dtype=dtype)


def ref_delta(tensors, anchors, residuals):
    """x - a (+ r) of the concatenation: float32, or float64 rounded once for float64 tensors."""
    acc = acc_dtype(tensors[0].dtype) if tensors else torch.float32
    d = flat(tensors, acc) - flat(anchors, acc)
    if residuals:
        d = d + flat(residuals, acc)
    return d.to(torch.float32)


def split_like(v, tensors):
    return [p.reshape(t.shape) for p, t in zip(v.split([t.numel() for t in tensors]), tensors)]


# ---- inputs ---------------------------------------------------------------------------------------

def make(sizes, dtype, seed, residuals=False):
    """Tensors, anchors (the tensors minus a small delta whose size varies by tensor, so int8
    chunks get different scales) and float32 residuals."""
    g = torch.Generator().manual_seed(seed)
    xs, anchors, rs = [], [], []
    for i, n in enumerate(sizes):
        x = torch.randn(n, generator=g, dtype=torch.float64)
        step = 10.0 ** ((i % 5) - 3) * torch.randn(n, generator=g, dtype=torch.float64)
        xs.append(x.to(dtype))
        anchors.append((x - step).to(dtype))
        rs.append((1e-4 * torch.randn(n, generator=g)).to(torch.float32))
    return xs, anchors, (rs if residuals else [])


def poisoned_bytes(n):
    return torch.full((n,), POISON, dtype=torch.uint8)


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def encoded(codec, tensors, anchors, residuals=()):
    out = poisoned_bytes(C.encoded_bytes(codec, sum(t.numel() for t in tensors)))
    C.encode_delta(tensors, anchors, list(residuals), out, codec)
    return out


# ---- the format -----------------------------------------------------------------------------------

def test_format_constants():
    assert CHUNK == 2048
    assert [C.codec_record_bytes(c) for c in CODECS] == [4096, 4096, 2064, 1040, 528]
    for codec in CODECS:
        rb = C.codec_record_bytes(codec)
        assert C.encoded_bytes(codec, 0) == 0
        assert C.encoded_bytes(codec, 1) == rb
        assert C.encoded_bytes(codec, CHUNK) == rb
        assert C.encoded_bytes(codec, CHUNK + 1) == 2 * rb
        assert C.encoded_bytes(codec, 3 * CHUNK + 5) == 4 * rb
    # three pointer arrays and one offsets array must fit a 4 KiB CUDA kernel argument
    assert 3 * MAX_TENSORS * 8 + (MAX_TENSORS + 1) * 8 + 8 < 4096


@pytest.mark.usefixtures("isa")
def test_int8_rounds_half_to_even_and_keeps_the_scale_in_the_header():
    x = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -127.0])
    out = encoded("int8", [x], [torch.zeros_like(x)])
    assert out[:4].view(torch.float32).item() == 1.0  # 127 / 127
    assert out[4:16].tolist() == [0] * 12
    q = out[16:16 + 8].view(torch.int8).tolist()
    assert q == [127, 0, 2, 2, 0, -2, 126, -127]
    assert out[16 + 8:].tolist() == [0] * (CHUNK - 8)


@pytest.mark.usefixtures("isa")
def test_int4_packs_two_codes_a_byte_low_nibble_first():
    x = torch.tensor([7.0, 0.5, 1.5, -0.5, -2.5, -7.0, 6.5])
    out = encoded("int4", [x], [torch.zeros_like(x)])
    assert len(out) == 1040
    assert out[:4].view(torch.float32).item() == 1.0  # 7 / 7
    assert out[4:16].tolist() == [0] * 12
    # q = [7, 0, 2, 0, -2, -7, 6] (half to even), two's complement nibbles, padding 0
    assert out[16:20].tolist() == [0x07, 0x02, 0x9E, 0x06]
    assert out[20:].tolist() == [0] * (1024 - 4)


@pytest.mark.usefixtures("isa")
def test_int2_has_four_levels_around_the_mean_magnitude():
    # amax 4, |v| / amax in 2^-20 units: 2^20 * (1 + 0.5 + 0.25 + 0.25 + 0) -> mean |v| = 1.6,
    # scale 0.625 * 1.6 = 1; t = v: 4 -> 3, 2 -> 3 (t >= 2), 1 -> 2, -1 -> 1, 0 -> 2 (+1)
    x = torch.tensor([4.0, 2.0, 1.0, -1.0, 0.0])
    r = [torch.zeros_like(x)]
    out = poisoned_bytes(C.encoded_bytes("int2", 5))
    C.encode_delta([x], [torch.zeros_like(x)], r, out, "int2")
    assert len(out) == 528
    assert out[:4].view(torch.float32).item() == 1.0
    assert out[16:18].tolist() == [3 | 3 << 2 | 2 << 4 | 1 << 6, 2]
    assert out[18:].tolist() == [0] * (512 - 2)
    assert r[0].tolist() == [1.0, -1.0, 0.0, 0.0, -1.0]  # v - (2c - 3) * scale


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("codec", ["int4", "int2"])
def test_low_bit_codecs_keep_zero_and_non_finite_chunks_apart(codec):
    n = 3 * CHUNK
    x = torch.zeros(n)
    x[CHUNK:CHUNK + 3] = torch.tensor([1e-40, -1e-40, 0.0])  # a denormal chunk
    x[2 * CHUNK] = float("inf")
    x[2 * CHUNK + 1] = 1.0
    r = [torch.zeros(n)]
    out = poisoned_bytes(C.encoded_bytes(codec, n))
    C.encode_delta([x], [torch.zeros(n)], r, out, codec)
    assert same_bits(out, ref_encode(ref_delta([x], [torch.zeros(n)], []), codec)[0])
    scale = out.reshape(3, -1)[:, :4].contiguous().view(torch.float32).reshape(-1)
    assert scale[0].item() == 0.0
    dec = torch.empty(n)
    C.decode_into(out, [dec], codec, 1.0)
    assert dec[:CHUNK].eq(0).all()  # a zero chunk decodes to zeros
    assert torch.isfinite(dec[CHUNK:2 * CHUNK]).all() and torch.isfinite(r[0][:2 * CHUNK]).all()
    assert torch.isnan(dec[2 * CHUNK:]).all()  # the inf is not hidden


@pytest.mark.usefixtures("isa")
def test_a_zero_chunk_has_scale_zero_and_a_denormal_one_stays_finite():
    z = torch.zeros(CHUNK + 3)
    x = z.clone()
    x[CHUNK:] = torch.tensor([1e-40, -1e-40, 0.0])  # amax / 127 > 0 but 1 / scale overflows
    r = [torch.zeros_like(z)]
    out = poisoned_bytes(C.encoded_bytes("int8", z.numel()))
    C.encode_delta([x], [z], r, out, "int8")
    rec = out.reshape(2, -1)
    assert rec[0].tolist() == [0] * rec.shape[1]  # scale 0, every value 0
    assert rec[1, 16:19].view(torch.int8).tolist() == [127, -127, 0]  # 0 * inf is 0, not NaN
    want, dec = ref_encode(ref_delta([x], [z], []), "int8")
    assert same_bits(out, want)
    assert torch.equal(r[0][:CHUNK], z[:CHUNK])  # the residual of a zero chunk is zero
    assert same_bits(r[0], x - dec) and torch.isfinite(r[0]).all()


# ---- encode_delta -----------------------------------------------------------------------------------

# Every pair of (instruction-set mode, dtype, codec, residuals, layout) in some case: 36 cases
# where the full product has 648.
@pytest.mark.parametrize(*pairwise_params(
    {"isa": ISAS, "dtype": DTYPES, "codec": CODECS, "with_residuals": [False, True],
     "layout": list(LAYOUTS)}), indirect=["isa"])
def test_encode_delta_matches_reference(isa, dtype, codec, with_residuals, layout):
    sizes = LAYOUTS[layout]
    xs, anchors, rs = make(sizes, dtype, seed=len(sizes), residuals=with_residuals)
    xs_before, anchors_before = [t.clone() for t in xs], [t.clone() for t in anchors]
    d = ref_delta(xs, anchors, rs)
    want, dec = ref_encode(d, codec)
    out = poisoned_bytes(want.numel())
    assert C.encode_delta(xs, anchors, rs, out, codec) == sum(sizes)
    assert same_bits(out, want)
    if with_residuals:
        for got, expected in zip(rs, split_like(d - dec, rs)):
            assert same_bits(got, expected)  # r = d - decode(encode(d))
    assert all(same_bits(a, b) for a, b in zip(xs + anchors, xs_before + anchors_before))  # read only


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("codec", CODECS)
def test_encode_delta_of_a_view_at_a_record_boundary(codec):
    xs, anchors, rs = make([CHUNK + 9, 3], torch.float32, seed=3, residuals=True)
    rb = C.codec_record_bytes(codec)
    big = poisoned_bytes(5 * rb)
    out = big[rb:3 * rb]
    want = ref_encode(ref_delta(xs, anchors, rs), codec)[0]
    C.encode_delta(xs, anchors, rs, out, codec)
    assert same_bits(out, want)
    assert big[:rb].eq(POISON).all() and big[3 * rb:].eq(POISON).all()


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("codec", CODECS)
def test_encode_delta_on_two_threads_matches_reference(codec):
    """More records than one CPU task: at::parallel_for splits them."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        xs, anchors, rs = make(TASKS, torch.float32, seed=5, residuals=True)
        d = ref_delta(xs, anchors, rs)
        want, dec = ref_encode(d, codec)
        assert same_bits(encoded(codec, xs, anchors, rs), want)
        assert same_bits(rs[0], d - dec)
    finally:
        torch.set_num_threads(before)


# ---- reduce_encoded ----------------------------------------------------------------------------------

def rank_buffers(codec, count, sizes, seed):
    """count encoded buffers of the same bucket (one per rank), back to back."""
    bufs = []
    for k in range(count):
        xs, anchors, _ = make(sizes, torch.float32, seed=seed + k)
        bufs.append(ref_encode(ref_delta(xs, anchors, []), codec)[0])
    return torch.cat(bufs)


@pytest.mark.parametrize(*pairwise_params(
    {"isa": ISAS, "codec": REDUCED, "count": [1, 3, 8],
     "sizes": [[1], [CHUNK], [3 * CHUNK + 5], [7, 0, CHUNK - 1, 17]]}), indirect=["isa"])
def test_reduce_encoded_matches_reference(isa, codec, count, sizes):
    src = rank_buffers(codec, count, sizes, seed=11)
    src_before = src.clone()
    for scale in (1.0 / count, -1.0 / count, 1.0):
        dst = poisoned_bytes(src.numel() // count)
        assert C.reduce_encoded(src, dst, codec, count, scale) == dst.numel() // C.codec_record_bytes(codec)
        assert same_bits(dst, ref_reduce(src, codec, count, scale))
        # the padding is zero bits whatever the scale's sign
        n, width = sum(sizes), (1 if codec == "int8" else 2)
        last = dst.reshape(-1, C.codec_record_bytes(codec))[-1]
        assert last[len(last) - (-n % CHUNK) * width:].eq(0).all()
    assert torch.equal(src, src_before)


@pytest.mark.usefixtures("isa")
def test_reduce_encoded_of_one_buffer_at_scale_one_is_the_identity_for_16_bit_codecs():
    for codec in WIRE:
        src = rank_buffers(codec, 1, [CHUNK + 5], seed=2)
        dst = poisoned_bytes(src.numel())
        C.reduce_encoded(src, dst, codec, 1, 1.0)
        assert torch.equal(dst, src)


@pytest.mark.usefixtures("isa")
def test_reduce_encoded_sums_in_rank_order():
    """Non-associative float32 sums: the order k = 0, 1, 2 is the one the reference uses."""
    vals = [torch.tensor([1e8, 1.0]), torch.tensor([-1e8, 1.0]), torch.tensor([1.0, 1e8])]
    src = torch.cat([ref_encode(v, "bf16")[0] for v in vals])
    dst = poisoned_bytes(src.numel() // 3)
    C.reduce_encoded(src, dst, "bf16", 3, 1.0)
    assert same_bits(dst, ref_reduce(src, "bf16", 3, 1.0))
    big = torch.tensor(1e8).bfloat16().item()
    assert ref_decode(dst, "bf16", 2).tolist() == [1.0, big]  # (big - big) + 1; (1 + 1) + big


# ---- apply_delta ------------------------------------------------------------------------------------

@pytest.mark.parametrize(*pairwise_params(
    {"isa": ISAS, "dtype": DTYPES, "codec": CODECS,
     "layout": ["none", "one", "chunk+1", "3chunks+5", "small", "straddle", "full_table"]}),
    indirect=["isa"])
def test_apply_delta_matches_reference(isa, dtype, codec, layout):
    sizes = LAYOUTS[layout]
    deltas, anchors, _ = make(sizes, dtype, seed=7)
    n = sum(sizes)
    src = ref_encode(ref_delta(deltas, anchors, []), codec)[0]
    d = ref_decode(src, codec, n)
    acc = acc_dtype(dtype)
    want = split_like((flat(anchors, acc) + d.to(acc)).to(dtype), anchors)
    xs = [torch.full_like(a, float("nan")) for a in anchors]
    assert C.apply_delta(src, xs, anchors, codec) == n
    for x, a, w in zip(xs, anchors, want):
        assert same_bits(x, w)
        assert same_bits(a, x)  # parameter and anchor end identical


# ---- decode_into ------------------------------------------------------------------------------------

@pytest.mark.parametrize(*pairwise_params(
    {"isa": ISAS, "dtype": DTYPES, "codec": CODECS, "scale": [-1.0, 0.25, 1 / 3]}),
    indirect=["isa"])
def test_decode_into_matches_reference(isa, dtype, codec, scale):
    sizes = LAYOUTS["straddle"] + [3 * CHUNK + 5, 0, 1]
    xs, anchors, _ = make(sizes, torch.float32, seed=9)
    src = ref_encode(ref_delta(xs, anchors, []), codec)[0]
    d = ref_decode(src, codec, sum(sizes))
    acc = acc_dtype(dtype)
    s = torch.tensor(scale, dtype=acc)
    want = split_like((d.to(acc) * s).to(dtype), xs)
    outs = [torch.full(x.shape, float("nan"), dtype=dtype) for x in xs]
    assert C.decode_into(src, outs, codec, scale) == sum(sizes)
    assert all(same_bits(o, w) for o, w in zip(outs, want))


@pytest.mark.usefixtures("isa")
def test_the_round_trip_of_one_averaging():
    """encode on 3 ranks, reduce at 1/3, apply: parameters and anchors end at anchor + mean delta,
    within half a quantisation step of each int8 encoding."""
    sizes = [CHUNK + 1, 0, 300]
    n = sum(sizes)
    ranks = [make(sizes, torch.float32, seed=20 + k)[0] for k in range(3)]
    anchor = make(sizes, torch.float32, seed=30)[0]
    src = torch.cat([encoded("int8", xs, anchor) for xs in ranks])
    mean = poisoned_bytes(src.numel() // 3)
    C.reduce_encoded(src, mean, "int8", 3, 1 / 3)
    xs = [torch.empty_like(a) for a in anchor]
    C.apply_delta(mean, xs, anchor, "int8")
    assert all(same_bits(x, a) for x, a in zip(xs, anchor))

    def steps(buf):  # each element's int8 scale
        return buf.reshape(-1, INT8_HEADER + CHUNK)[:, :4].contiguous().view(torch.float32).repeat_interleave(CHUNK)[:n]

    bound = sum(steps(b) for b in src.chunk(3)) / 3 / 2 + steps(mean) / 2 + 1e-6
    exact = sum(flat(r, torch.float64) for r in ranks) / 3
    assert ((flat(xs, torch.float64) - exact).abs() <= bound).all()


# ---- apply_sum ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(*pairwise_params(
    {"isa": ISAS, "dtype": DTYPES, "codec": CODECS, "count": [1, 2, 5], "anchored": [True, False],
     "layout": ["one", "chunk+1", "small", "straddle", "full_table"]}), indirect=["isa"])
def test_apply_sum_matches_reference(isa, dtype, codec, count, anchored, layout):
    sizes = LAYOUTS[layout]
    n = sum(sizes)
    src = rank_buffers(codec, count, sizes, seed=13)
    src_before = src.clone()
    scale = -1.0 / count if anchored else 1.0 / count
    m = ref_sum(src, codec, count, n, scale)
    anchors = make(sizes, dtype, seed=14)[1]
    acc = acc_dtype(dtype)
    if anchored:
        want = split_like((flat(anchors, acc) + m.to(acc)).to(dtype), anchors)
    else:
        want = split_like(m.to(dtype), anchors)
    xs = [torch.full_like(a, float("nan")) for a in anchors]
    assert C.apply_sum(src, count, xs, anchors if anchored else [], codec, scale) == n
    for x, w in zip(xs, want):
        assert same_bits(x, w)
    if anchored:
        assert all(same_bits(a, x) for a, x in zip(anchors, xs))
    assert torch.equal(src, src_before)


@pytest.mark.usefixtures("isa")
def test_apply_sum_adds_in_rank_order():
    vals = [torch.tensor([1e8, 1.0]), torch.tensor([-1e8, 1.0]), torch.tensor([1.0, 1e8])]
    src = torch.cat([ref_encode(v, "bf16")[0] for v in vals])
    x = [torch.empty(2)]
    C.apply_sum(src, 3, x, [], "bf16", 1.0)
    big = torch.tensor(1e8).bfloat16().item()
    assert x[0].tolist() == [1.0, big]  # (big - big) + 1; (1 + 1) + big


def test_apply_sum_errors_name_the_problem():
    x = [torch.zeros(5)]
    src = poisoned_bytes(2 * 528)
    with raises("apply_sum: count must be >= 1, got 0"):
        C.apply_sum(src, 0, x, [], "int2")
    with raises("apply_sum: src has 1056 bytes, expected count * encoded_bytes('int2', 5) = 528 = 1584"):
        C.apply_sum(src, 3, x, [], "int2")
    with raises("apply_sum: anchors has 2 tensors but tensors has 1"):
        C.apply_sum(src, 2, x, x + x, "int2")
    with raises("reduce_encoded: codec must be one of fp16, bf16, int8 (int2 contributions are summed "
                "by apply_sum), got 'int2'"):
        C.reduce_encoded(src, src[:528], "int2", 2)


# ---- bad input ------------------------------------------------------------------------------------

def raises(message):
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


def test_unknown_codec_is_named():
    t, out = [torch.zeros(3)], poisoned_bytes(4096)
    for op, call in [
        ("encode_delta", lambda: C.encode_delta(t, t, [], out, "fp8")),
        ("reduce_encoded", lambda: C.reduce_encoded(out, out, "fp8", 1)),
        ("apply_delta", lambda: C.apply_delta(out, t, t, "fp8")),
        ("decode_into", lambda: C.decode_into(out, t, "fp8")),
        ("apply_sum", lambda: C.apply_sum(out, 1, t, [], "fp8")),
        ("encoded_bytes", lambda: C.encoded_bytes("fp8", 3)),
        ("codec_record_bytes", lambda: C.codec_record_bytes("fp8")),
    ]:
        with raises(f"{op}: codec must be one of fp16, bf16, int8, int4, int2, got 'fp8'"):
            call()
    with raises("encoded_bytes: n must be >= 0, got -1"):
        C.encoded_bytes("int8", -1)


def test_encode_delta_errors_name_the_problem():
    x = [torch.zeros(5), torch.zeros(6)]
    out = poisoned_bytes(4096)
    enc = C.encode_delta
    with raises("encode_delta: anchors has 1 tensors but tensors has 2"):
        enc(x, x[:1], [], out, "fp16")
    with raises("encode_delta: residuals must be empty (no error feedback) or hold one tensor per tensor (2), got 1"):
        enc(x, x, x[:1], out, "fp16")
    many = [torch.zeros(1)] * (MAX_TENSORS + 1)
    with raises(f"encode_delta: {MAX_TENSORS + 1} tensors are more than one call takes "
                f"(MAX_TENSORS_PER_DELTA_LAUNCH = {MAX_TENSORS}); split the bucket"):
        enc(many, many, [], out, "fp16")
    with raises("encode_delta: tensors[1] has dtype Double but tensors[0] has Float; use one bucket per dtype"):
        enc([x[0], x[1].double()], x, [], out, "fp16")
    with raises("encode_delta: tensors[0] dtype Int is not supported (float32, float64, float16, bfloat16)"):
        enc([torch.zeros(5, dtype=torch.int32)], x[:1], [], out, "fp16")
    with raises("encode_delta: anchors[1] has dtype Half but tensors[1] has Float"):
        enc(x, [x[0], x[1].half()], [], out, "fp16")
    with raises("encode_delta: anchors[1] has 5 elements but tensors[1] has 6"):
        enc(x, [x[0], x[0]], [], out, "fp16")
    with raises("encode_delta: residuals[0] has dtype Double; residuals must be float32"):
        enc(x, x, [x[0].double(), x[1]], out, "fp16")
    with raises("encode_delta: residuals[1] has 5 elements but tensors[1] has 6"):
        enc(x, x, [x[0], x[0]], out, "fp16")
    with raises("encode_delta: anchors[0] is on meta but out is on cpu"):
        enc(x, [torch.zeros(5, device="meta"), x[1]], [], out, "fp16")
    with raises("encode_delta: tensors[1] (shape [3, 2]) is not contiguous; pass t.contiguous() and copy "
                "back, or make it contiguous"):
        enc([x[0], torch.zeros(3, 4)[:, ::2]], x, [], out, "fp16")
    with raises("encode_delta: out has 4096 bytes, expected encoded_bytes('int8', 11) = 2064"):
        enc(x, x, [], out, "int8")
    with raises("encode_delta: out has 4095 bytes, expected encoded_bytes('bf16', 11) = 4096"):
        enc(x, x, [], poisoned_bytes(4095), "bf16")
    with raises("encode_delta: out must be a uint8 tensor, got Float"):
        enc(x, x, [], torch.zeros(1024), "fp16")
    with raises("encode_delta: out must be contiguous"):
        enc(x, x, [], poisoned_bytes(8192)[::2], "fp16")
    with raises("encode_delta: out must start at a 16-byte aligned address (it starts 4 bytes past one)"):
        enc(x, x, [], poisoned_bytes(4100)[4:], "fp16")
    with raises("encode_delta: out device meta is not supported (cpu, cuda)"):
        enc(x, x, [], torch.empty(4096, dtype=torch.uint8, device="meta"), "fp16")


def test_decode_side_errors_name_the_problem():
    x = [torch.zeros(5), torch.zeros(6)]
    src = poisoned_bytes(2064)
    with raises("apply_delta: anchors has 1 tensors but tensors has 2"):
        C.apply_delta(src, x, x[:1], "int8")
    with raises("apply_delta: src has 2064 bytes, expected encoded_bytes('fp16', 11) = 4096"):
        C.apply_delta(src, x, x, "fp16")
    with raises("apply_delta: anchors[0] has dtype BFloat16 but tensors[0] has Float"):
        C.apply_delta(src, x, [x[0].bfloat16(), x[1]], "int8")
    with raises("decode_into: src has 2064 bytes, expected encoded_bytes('int8', 0) = 0"):
        C.decode_into(src, [], "int8")
    with raises("decode_into: tensors[0] is on meta but src is on cpu"):
        C.decode_into(src, [torch.zeros(5, device="meta")], "int8")
    many = [torch.zeros(1)] * (MAX_TENSORS + 1)
    with raises(f"decode_into: {MAX_TENSORS + 1} tensors are more than one call takes "
                f"(MAX_TENSORS_PER_DELTA_LAUNCH = {MAX_TENSORS}); split the bucket"):
        C.decode_into(src, many, "int8")
    with raises("decode_into: src must be a uint8 tensor, got Char"):
        C.decode_into(src.view(torch.int8), x, "int8")


def test_reduce_encoded_errors_name_the_problem():
    src, dst = poisoned_bytes(3 * 4096), poisoned_bytes(4096)
    with raises("reduce_encoded: count must be >= 1, got 0"):
        C.reduce_encoded(src, dst, "fp16", 0)
    with raises("reduce_encoded: dst has 4096 bytes, not a whole number of 2064-byte int8 records"):
        C.reduce_encoded(src, dst, "int8", 3)
    with raises("reduce_encoded: src has 12288 bytes, expected count * dst = 2 * 4096 = 8192"):
        C.reduce_encoded(src, dst, "fp16", 2)
    with raises("reduce_encoded: dst overlaps src; pass a separate buffer"):
        C.reduce_encoded(src, src[4096:8192], "fp16", 3)
    with raises("reduce_encoded: src must be contiguous"):
        C.reduce_encoded(poisoned_bytes(2 * 3 * 4096)[::2], dst, "fp16", 3)
    with raises("reduce_encoded: dst device meta is not supported (cpu, cuda)"):
        C.reduce_encoded(src, torch.empty(4096, dtype=torch.uint8, device="meta"), "fp16", 3)


@pytest.mark.skipif(C.built_with_cuda(), reason="this build has CUDA")
def test_cuda_tensors_in_a_cpu_only_build():
    from torch._subclasses.fake_tensor import FakeTensorMode  # reports device cuda to C++

    with FakeTensorMode():
        buf = torch.empty(4096, dtype=torch.uint8, device="cuda")
    message = "hvd_hier._C was built without CUDA; rebuild with HVD_HIER_WITH_CUDA=1"
    with raises("reduce_encoded: " + message):
        C.reduce_encoded(buf, poisoned_bytes(4096), "fp16", 1)
    with raises("encode_delta: " + message):
        C.encode_delta([], [], [], buf, "fp16")
    with raises("apply_delta: " + message):
        C.apply_delta(buf, [], [], "fp16")
