"""Property-based tests (hypothesis): the kernels and buckets against the reference on random
shapes, dtypes, scales and bucket caps; the schedule against its definition on random K1, K2,
warmup and resume points."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hvd_hier.comm.extension import extension
from hvd_hier.config.schedule import HierSchedule, Reduction
from hvd_hier.reduce.buckets import BucketAverager, plan_buckets
from hvd_hier.reduce.flat import FlatAverager
from reference import reference_reduction

C = extension()
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
shapes = st.lists(st.lists(st.integers(0, 9), min_size=0, max_size=3), min_size=1, max_size=7)
scales = st.sampled_from([1.0, 0.5, 0.25, 1 / 3, 1 / 7])


def tensors_for(shape_list, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(tuple(s), generator=g, dtype=torch.float64).to(dtype) for s in shape_list]


def ref_scaled(t, scale):
    acc = torch.float64 if t.dtype == torch.float64 else torch.float32
    return (t.to(acc) * scale).to(t.dtype)


@settings(max_examples=150, deadline=None)
@given(shape_list=shapes, dtype=st.sampled_from(DTYPES), bucket_dtype=st.sampled_from(DTYPES),
       scale=scales, offset=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_pack_unpack_match_reference(shape_list, dtype, bucket_dtype, scale, offset, seed):
    tensors = tensors_for(shape_list, dtype, seed)
    total = sum(t.numel() for t in tensors)
    bucket = torch.full((total + offset,), -3.0, dtype=bucket_dtype)
    assert C.pack(tensors, bucket, scale, offset) == total
    acc = torch.float64 if torch.float64 in (dtype, bucket_dtype) else torch.float32
    flat = (torch.cat([t.reshape(-1).to(acc) for t in tensors]) if tensors
            else torch.empty(0, dtype=acc))
    assert torch.equal(bucket[offset:], (flat * scale if scale != 1.0 else flat).to(bucket_dtype))
    assert torch.equal(bucket[:offset], torch.full((offset,), -3.0, dtype=bucket_dtype))
    outs = [torch.empty_like(t) for t in tensors]
    assert C.unpack(bucket, outs, scale, offset) == total
    back = bucket[offset:].to(acc)
    back = back * scale if scale != 1.0 else back
    for got, want in zip(outs, torch.split(back, [t.numel() for t in tensors])):
        assert torch.equal(got.reshape(-1), want.to(got.dtype))


@settings(max_examples=150, deadline=None)
@given(shape_list=shapes, dtypes=st.lists(st.sampled_from(DTYPES), min_size=7, max_size=7),
       cap=st.integers(1, 600), scale=scales, seed=st.integers(0, 2**16))
def test_buckets_cover_every_element_once_and_average_like_the_reference(
        shape_list, dtypes, cap, scale, seed):
    tensors = [t.to(d) for t, d in zip(tensors_for(shape_list, torch.float64, seed), dtypes)]
    buckets = plan_buckets(tensors, cap, 64)
    seen = {i: [] for i in range(len(tensors))}
    for b in buckets:
        itemsize = tensors[b.segments[0][0]].element_size()
        assert b.numel * itemsize <= max(cap, itemsize)  # at least one element per bucket
        assert {tensors[i].dtype for i, _, _ in b.segments} == {tensors[b.segments[0][0]].dtype}
        for index, first, last in b.segments:
            seen[index].append((first, last))
    for index, t in enumerate(tensors):  # contiguous, in order, no overlap, nothing missing
        spans = sorted(seen[index])
        assert sum(last - first for first, last in spans) == t.numel()
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    want = [ref_scaled(t, scale) for t in tensors]
    averager = BucketAverager(tensors, cap)
    averager.memory_passes(scale)
    for got, w in zip(tensors, want):
        assert torch.equal(got, w)


@settings(max_examples=60, deadline=None)
@given(shape_list=shapes, dtype=st.sampled_from(DTYPES), cap=st.integers(64, 2048),
       seed=st.integers(0, 2**16))
def test_flat_storage_keeps_values_and_is_64_byte_aligned(shape_list, dtype, cap, seed):
    tensors = [torch.nn.Parameter(t) for t in tensors_for(shape_list, dtype, seed)]
    before = [t.detach().clone() for t in tensors]
    averager = FlatAverager(tensors, cap)
    for t, b in zip(tensors, before):
        assert torch.equal(t.detach(), b)
        if t.numel():
            assert t.data_ptr() % 64 == 0
    averager.memory_passes(0.5)
    for t, b in zip(tensors, before):
        assert torch.equal(t.detach(), ref_scaled(b, 0.5))


@settings(max_examples=300, deadline=None)
@given(k1=st.integers(1, 12), k2=st.integers(1, 12), warmup=st.integers(0, 30),
       steps=st.integers(0, 400))
def test_schedule_matches_the_definition(k1, k2, warmup, steps):
    s = HierSchedule(k1, k2, warmup)
    counts = {"sync": 0, "local": 0, "global": 0, "none": 0}
    for t in range(1, steps + 1):
        kind = reference_reduction(t, k1, k2, warmup)
        assert s.reduction_at(t).value == kind, (t, k1, k2, warmup)
        counts[kind] += 1
    got = s.counts_through(steps)
    assert {k: got[k] for k in ("sync", "local", "global")} == {
        k: counts[k] for k in ("sync", "local", "global")}
    # after warmup, local + global averagings = floor((steps - warmup) / K1)
    assert got["local"] + got["global"] == max(0, steps - warmup) // k1


@settings(max_examples=200, deadline=None)
@given(k1=st.integers(1, 8), k2=st.integers(1, 8), warmup=st.integers(0, 20),
       resume=st.integers(0, 100), more=st.integers(0, 100))
def test_a_resumed_schedule_continues_the_uninterrupted_one(k1, k2, warmup, resume, more):
    s = HierSchedule(k1, k2, warmup)
    whole = [s.reduction_at(t) for t in range(1, resume + more + 1)]
    # a restarted job knows only the step it resumes from
    restarted = HierSchedule(k1, k2, warmup)
    tail = [restarted.reduction_at(resume + i) for i in range(1, more + 1)]
    assert tail == whole[resume:]
    before = s.counts_through(resume)
    after = s.counts_through(resume + more)
    assert sum(1 for r in tail if r is Reduction.GLOBAL) == after["global"] - before["global"]
