"""Bucketing changes nothing: averaging with tiny buckets (tensors split across many buckets,
several in flight) gives bit for bit the result of one bucket per dtype.

Groups of two ranks: the sum of two floats does not depend on the order it is taken in, so
any difference would come from the packing, not from the reduction."""

import torch

import horovod.torch as hvd
from hvd_hier.reduce.buckets import BucketAverager
from hvd_hier.reduce.flat import FlatAverager
from common import init, main, report

SHAPES = [(17, 33), (1,), (0,), (4096,), (3, 3, 3, 3), (1000,), (5,)]


def params(rank, dtype):
    g = torch.Generator().manual_seed(100 + rank)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in SHAPES]


def run():
    rank, size = init()
    pairs = [hvd.add_process_set([0, 1]), hvd.add_process_set([2, 3])]
    pair_set, partner = pairs[rank // 2], rank ^ 1
    for dtype in (torch.float32, torch.float64, torch.float16):
        extra = [t.double() for t in params(rank + 7, torch.float32)]  # a second dtype
        small, large = params(rank, dtype), params(rank, dtype)
        a = BucketAverager(small + extra, bucket_cap_bytes=256, max_in_flight=3)
        b = BucketAverager(large + [t.clone() for t in extra], bucket_cap_bytes=1 << 30)
        assert len(a.buckets) > 20 and len(b.buckets) == (1 if dtype == torch.float64 else 2)
        a.average(pair_set, 2, "local")
        b.average(pair_set, 2, "local")
        for x, y in zip(a.tensors, b.tensors):
            assert torch.equal(x, y), dtype
        # both are the pair's average: the sum rounded to the dtype, then halved (exact)
        for x, mine, theirs in zip(small, params(rank, dtype), params(partner, dtype)):
            assert torch.equal(x, (mine + theirs) * 0.5), dtype
        # extra memory: at most 3 buffers of one small bucket, or one bucket per dtype
        assert a.pool_bytes() <= 2 * 3 * 256 and b.pool_bytes() == b.nbytes
    report("bucketed equals unbucketed")

    # persistent flat storage: small buffers, three in flight, equal to packing
    for dtype in (torch.float32, torch.float16):  # Horovod's Gloo ops refuse bfloat16
        extra = [t.double() for t in params(rank + 7, torch.float32)]
        flat, packed = params(rank, dtype) + extra, params(rank, dtype) + [t.clone() for t in extra]
        a = FlatAverager(flat, bucket_cap_bytes=256, max_in_flight=3)
        b = BucketAverager(packed, bucket_cap_bytes=1 << 30)
        assert len(a.buckets) > 10 and a.pool_bytes() == 0
        storages = {t.untyped_storage().data_ptr() for t in flat if t.numel()}
        assert a.average(pair_set, 2, "local") == a.nbytes
        b.average(pair_set, 2, "local")
        for x, y in zip(flat, packed):
            assert torch.equal(x, y), dtype
        # four ranks: the order of the sum depends on the buffers' layout, so the two paths
        # may round differently; each path leaves every rank with the same values
        a.average(hvd.global_process_set, 4, "global")
        b.average(hvd.global_process_set, 4, "global")
        for i, (x, y) in enumerate(zip(flat, packed)):
            for t, path in ((x, "flat"), (y, "packed")):
                everyone = hvd.allgather(t.detach().double().reshape(1, -1), name=f"test.{path}.{i}")
                assert all(torch.equal(everyone[0], e) for e in everyone), (dtype, path, i)
            tol = 1e-2 if dtype == torch.float16 else 1e-6
            assert torch.allclose(x.double(), y.double(), rtol=tol, atol=tol), (dtype, i)
        assert {t.untyped_storage().data_ptr() for t in flat if t.numel()} == storages
    report("flat storage equals packing")


if __name__ == "__main__":
    main(run)
