"""The compressed reduction's pure parts (hvd_hier.reduce.codec): shards of records, the bytes
a rank sends, and the reducer's arguments; the reduction itself runs under horovodrun
(tests/parallel/workers/compressed.py) and its kernels in test_codec_kernels.py."""

import pytest
import torch

from hvd_hier.comm.extension import extension
from hvd_hier.reduce.codec import DeltaReducer, link_bytes, shard_records

C = extension()


@pytest.mark.parametrize("records,parts,expected", [
    (0, 3, [0, 0, 0]), (1, 3, [1, 0, 0]), (7, 3, [3, 2, 2]), (9, 3, [3, 3, 3]), (5, 1, [5]),
])
def test_shards_are_contiguous_and_even(records, parts, expected):
    assert shard_records(records, parts) == expected
    assert sum(expected) == records


@pytest.mark.parametrize("codec,record", [("fp16", 4096), ("bf16", 4096), ("int8", 2064)])
def test_link_bytes_formula(codec, record):
    n = 3 * 2048 + 5  # four records
    assert C.encoded_bytes(codec, n) == 4 * record
    assert link_bytes(codec, n, 8) == 2 * 7 / 8 * 4 * record
    assert link_bytes(None, n, 8) == 2 * 7 / 8 * 4 * n
    assert link_bytes(codec, n, 1) == 0.0


def test_reducer_plans_tables_within_the_kernel_limit_and_counts_encoded_bytes():
    tensors = [torch.zeros(10) for _ in range(C.MAX_TENSORS_PER_DELTA_LAUNCH + 3)]
    anchor = [t.clone() for t in tensors]
    r = DeltaReducer("int8", tensors, anchor, bucket_cap_bytes=1 << 20)
    assert [len(b.segments) for b in r.buckets] == [C.MAX_TENSORS_PER_DELTA_LAUNCH, 3]
    assert r.nbytes == 2 * 2064 and len(r.residuals) == len(tensors)
    assert DeltaReducer("bf16", tensors, anchor, 1 << 20).residuals == []
    with pytest.raises(ValueError, match=r"compression must be one of fp16, bf16, int8, got 'int4'"):
        DeltaReducer("int4", tensors, anchor, 1 << 20)


def test_drop_contribution_is_a_zero_delta():
    x, a = [torch.tensor([1.0, 2.0])], [torch.tensor([0.5, 0.25])]
    r = DeltaReducer("int8", x, a, 1 << 20)
    r.residuals[0].fill_(3.0)
    r.drop_contribution()
    assert torch.equal(x[0], a[0]) and torch.equal(r.residuals[0], torch.zeros(2))
