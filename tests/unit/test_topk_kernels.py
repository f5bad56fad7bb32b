"""The top-k kernels (encode_topk, apply_topk) against the pure-PyTorch reference of their wire
format (tests/wire.py), byte for byte, on every CPU instruction-set mode (the CUDA kernels' code
runs on the CPU as "cuda_emulation")."""

import re

import pytest
import torch

from hvd_hier.comm.extension import extension
from kernel_isa import ISAS
from pairwise import pairwise_params
from wire import ref_topk_encode, ref_topk_sum, topk_record_bytes

C = extension()
CHUNK = C.CODEC_CHUNK
VALUES = ["int8", "int4", "int2"]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LAYOUTS = {
    "one": [1],
    "chunk-1": [CHUNK - 1],
    "3chunks+5": [3 * CHUNK + 5],
    "small": [0, 1, 7, 8, 9, 0, 0, 15, 16, 17, 31, 33, 0, 1],
    "straddle": [5, CHUNK - 3, 0, 7, CHUNK, 1, 0],
}


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def make(sizes, dtype, seed, ties=False):
    g = torch.Generator().manual_seed(seed)
    xs, anchors, rs = [], [], []
    for i, n in enumerate(sizes):
        step = 10.0 ** ((i % 5) - 3) * torch.randn(n, generator=g, dtype=torch.float64)
        if ties:  # few distinct magnitudes: many keys equal the threshold
            step = torch.sign(step) * (1 + torch.randint(0, 3, (n,), generator=g)) / 8
        x = torch.randn(n, generator=g, dtype=torch.float64)
        xs.append(x.to(dtype))
        anchors.append((x - step).to(dtype))
        rs.append((1e-4 * torch.randn(n, generator=g)).to(torch.float32))
    return xs, anchors, rs


def flat_delta(xs, anchors, rs):
    acc = torch.float64 if xs and xs[0].dtype == torch.float64 else torch.float32
    d = torch.cat([(x.to(acc) - a.to(acc)).reshape(-1) for x, a in zip(xs, anchors)]) \
        if xs else torch.zeros(0)
    if rs:
        d = d + torch.cat([r.to(acc) for r in rs])
    return d.to(torch.float32)


def test_sizes():
    assert C.topk_slots(0.02) == 41 and C.topk_slots(0.5) == 1024 and C.topk_slots(1e-9) == 1
    assert C.topk_record_bytes(41, "int2") == 112  # 16 + 82 + 11 = 109, rounded up to 16
    assert C.topk_record_bytes(41, "int8") == 144 and C.topk_record_bytes(41, "int4") == 128
    assert C.topk_encoded_bytes(3 * CHUNK + 5, 41, "int2") == 4 * 112
    for slots, values in [(1, "int8"), (41, "int2"), (2048, "int4"), (7, "int4")]:
        assert C.topk_record_bytes(slots, values) == topk_record_bytes(slots, values)


@pytest.mark.parametrize(*pairwise_params(
    {"isa": ISAS, "dtype": DTYPES, "values": VALUES, "slots": [1, 41, 300, CHUNK],
     "layout": list(LAYOUTS), "ties": [False, True]}), indirect=["isa"])
def test_encode_topk_matches_reference(isa, dtype, values, slots, layout, ties):
    sizes = LAYOUTS[layout]
    xs, anchors, rs = make(sizes, dtype, seed=len(sizes) + slots, ties=ties)
    d = flat_delta(xs, anchors, rs)
    want, rest = ref_topk_encode(d, slots, values)
    out = torch.full((C.topk_encoded_bytes(sum(sizes), slots, values),), 0xAB, dtype=torch.uint8)
    assert C.encode_topk(xs, anchors, rs, out, slots, values) == sum(sizes)
    assert same_bits(out, want)
    got = torch.cat([r.reshape(-1) for r in rs]) if rs else torch.zeros(0)
    assert same_bits(got, rest)  # kept: v - decode; the others: v


@pytest.mark.usefixtures("isa")
def test_ties_keep_the_first_and_a_short_chunk_keeps_everything():
    v = torch.tensor([1.0, -3.0, 3.0, 2.0, -3.0, 0.5])
    out = torch.empty(C.topk_encoded_bytes(6, 2, "int8"), dtype=torch.uint8)
    C.encode_topk([v], [torch.zeros(6)], [], out, 2, "int8")
    assert out[4:8].view(torch.int32).item() == 2
    assert out[16:20].view(torch.int16).tolist() == [1, 2]  # |-3| at 1 and 2 beat the one at 4
    assert out[20:22].view(torch.int8).tolist() == [-127, 127]
    out = torch.empty(C.topk_encoded_bytes(6, 50, "int8"), dtype=torch.uint8)
    C.encode_topk([v], [torch.zeros(6)], [], out, 50, "int8")
    assert out[4:8].view(torch.int32).item() == 6
    assert out[16:28].view(torch.int16).tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(*pairwise_params(
    {"isa": ISAS, "dtype": DTYPES, "values": VALUES, "count": [1, 3], "anchored": [True, False],
     "layout": ["one", "3chunks+5", "straddle"]}), indirect=["isa"])
def test_apply_topk_matches_reference(isa, dtype, values, count, anchored, layout):
    sizes, slots = LAYOUTS[layout], 41
    n = sum(sizes)
    src = torch.cat([ref_topk_encode(flat_delta(*make(sizes, torch.float32, seed=k)), slots,
                                     values)[0] for k in range(count)])
    scale = 1.0 / count if anchored else -1.0 / count
    m = ref_topk_sum(src, count, n, slots, values, scale)
    anchors = make(sizes, dtype, seed=9)[1]
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    flat_anchor = torch.cat([a.reshape(-1).to(acc) for a in anchors])
    want = ((flat_anchor + m.to(acc)) if anchored else m).to(dtype)
    xs = [torch.full_like(a, float("nan")) for a in anchors]
    assert C.apply_topk(src, count, xs, anchors if anchored else [], slots, values, scale) == n
    assert same_bits(torch.cat([x.reshape(-1) for x in xs]), want)
    if anchored:
        assert all(same_bits(a, x) for a, x in zip(anchors, xs))


@pytest.mark.usefixtures("isa")
def test_apply_topk_adds_the_ranks_in_order():
    a = torch.zeros(CHUNK)
    ranks = [torch.zeros(CHUNK) for _ in range(3)]
    ranks[0][5], ranks[1][5], ranks[2][5] = 1e8, -1e8, 1.0
    src = torch.cat([ref_topk_encode(r, 1, "int8")[0] for r in ranks])
    x = [torch.empty(CHUNK)]
    C.apply_topk(src, 3, x, [a], 1, "int8", 1.0)
    assert x[0][5].item() == 1.0 and x[0].count_nonzero().item() == 1  # (1e8 - 1e8) + 1


def raises(message):
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


def test_bad_input_is_named():
    x = [torch.zeros(5)]
    out = torch.empty(C.topk_encoded_bytes(5, 4, "int2"), dtype=torch.uint8)
    with raises("encode_topk: values must be one of int8, int4, int2, got 'fp16'"):
        C.encode_topk(x, x, [], out, 4, "fp16")
    with raises("encode_topk: slots must be in [1, 2048], got 0"):
        C.encode_topk(x, x, [], out, 0, "int2")
    with raises("encode_topk: out has 32 bytes, expected topk_encoded_bytes(5, 9, 'int2') = 48"):
        C.encode_topk(x, x, [], out, 9, "int2")
    with raises("apply_topk: count must be >= 1, got 0"):
        C.apply_topk(out, 0, x, [], 4, "int2")
    with raises("apply_topk: src has 32 bytes, expected count * topk_encoded_bytes(5, 4, 'int2') = "
                "32 = 64"):
        C.apply_topk(out, 2, x, [], 4, "int2")
    with raises("topk_slots: fraction must be in (0, 1), got 1.500000"):
        C.topk_slots(1.5)
