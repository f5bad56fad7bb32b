"""Bucket planning and the flat views the averaging packs from, without processes."""

import pytest
import torch

from hvd_hier.reduce.buckets import BucketAverager, flat_view, plan_buckets


def covered(buckets, tensors):
    """Every element of every tensor, exactly once, in order, per (device, dtype)."""
    seen = {}
    for b in buckets:
        assert b.numel == sum(last - first for _, first, last in b.segments)
        for index, first, last in b.segments:
            assert tensors[index].dtype == b.dtype and 0 <= first < last <= tensors[index].numel()
            seen.setdefault(index, []).append((first, last))
    for index, t in enumerate(tensors):
        spans = seen.get(index, [])
        if t.numel() == 0:
            assert spans == []
            continue
        assert spans[0][0] == 0 and spans[-1][1] == t.numel()
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_small_tensors_share_buckets_up_to_the_cap():
    tensors = [torch.zeros(10) for _ in range(7)]  # 40 bytes each
    buckets = plan_buckets(tensors, bucket_cap_bytes=100, max_segments=160)
    assert [b.numel for b in buckets] == [25, 25, 20]
    assert all(b.nbytes <= 100 for b in buckets)
    covered(buckets, tensors)


def test_a_large_tensor_is_split_so_no_bucket_exceeds_the_cap():
    tensors = [torch.zeros(3), torch.zeros(1000), torch.zeros(2)]
    buckets = plan_buckets(tensors, bucket_cap_bytes=256, max_segments=160)
    assert max(b.nbytes for b in buckets) == 256
    assert sum(b.numel for b in buckets) == 1005
    covered(buckets, tensors)


def test_one_bucket_per_dtype_in_order():
    tensors = [torch.zeros(4), torch.zeros(4, dtype=torch.float64), torch.zeros(4),
               torch.zeros(4, dtype=torch.float16), torch.zeros(0), torch.zeros(4, dtype=torch.float64)]
    buckets = plan_buckets(tensors, bucket_cap_bytes=1 << 20, max_segments=160)
    assert [(b.dtype, [s[0] for s in b.segments]) for b in buckets] == [
        (torch.float32, [0, 2]), (torch.float64, [1, 5]), (torch.float16, [3])]
    covered(buckets, tensors)


def test_segment_limit_closes_a_bucket():
    tensors = [torch.zeros(1) for _ in range(10)]
    buckets = plan_buckets(tensors, bucket_cap_bytes=1 << 20, max_segments=4)
    assert [len(b.segments) for b in buckets] == [4, 4, 2]


def test_flat_views_alias_the_tensor():
    t = torch.arange(24.0).reshape(2, 3, 4)
    v = flat_view(t)
    v[5] = -1
    assert t.reshape(-1)[5] == -1
    # channels_last is dense: the view walks memory order
    cl = torch.arange(16.0).reshape(1, 4, 2, 2).to(memory_format=torch.channels_last)
    v = flat_view(cl)
    assert v.numel() == 16 and v.data_ptr() == cl.data_ptr()
    v.mul_(2)
    assert torch.equal(cl, 2 * torch.arange(16.0).reshape(1, 4, 2, 2))
    with pytest.raises(ValueError) as info:
        flat_view(torch.zeros(4, 4)[:, :2])
    assert str(info.value) == ("a tensor of shape (4, 2) and strides (4, 1) is neither contiguous "
                               "nor dense; hvd_hier averages dense tensors only")


def test_averaging_over_one_rank_is_a_no_op_without_buffers():
    tensors = [torch.randn(100), torch.randn(7, dtype=torch.float64)]
    before = [t.clone() for t in tensors]
    avg = BucketAverager(tensors, bucket_cap_bytes=64)
    assert avg.average(process_set=None, size=1, tag="local") == 0
    assert all(torch.equal(a, b) for a, b in zip(tensors, before))
    assert avg.pool_bytes() == 0
    assert avg.nbytes == 100 * 4 + 7 * 8


def test_unsupported_dtypes_are_refused():
    with pytest.raises(ValueError) as info:
        BucketAverager([torch.zeros(2, dtype=torch.int64)], 64)
    assert str(info.value) == "cannot average a tensor of dtype torch.int64"
