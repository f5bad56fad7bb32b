"""Bucketing changes nothing: averaging with tiny buckets (tensors split across many buckets,
several in flight) gives bit for bit the result of one bucket per dtype.

Groups of two ranks: the sum of two floats does not depend on the order it is taken in, so
any difference would come from the packing, not from the reduction."""

import torch

import horovod.torch as hvd
from hvd_hier.averaging import BucketAverager
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


if __name__ == "__main__":
    main(run)
