"""The compressed reduction's pure parts (hvd_hier.reduce.codec): shards of records, the bytes
a rank sends, and the reducer's arguments; the reduction itself runs under horovodrun
(tests/parallel/workers/compressed.py) and its kernels in test_codec_kernels.py."""

import sys
from pathlib import Path

import pytest
import torch

from hvd_hier.comm.extension import extension
from hvd_hier.reduce.codec import DeltaReducer, link_bytes, run_steps, shard_records
from hvd_hier.reduce.gathered import GatheredDeltas, make_reducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hvd_hier import TopK  # noqa: E402
from wire import ref_decode, ref_topk_sum  # noqa: E402

C = extension()


@pytest.mark.parametrize("records,parts,expected", [
    (0, 3, [0, 0, 0]), (1, 3, [1, 0, 0]), (7, 3, [3, 2, 2]), (9, 3, [3, 3, 3]), (5, 1, [5]),
])
def test_shards_are_contiguous_and_even(records, parts, expected):
    assert shard_records(records, parts) == expected
    assert sum(expected) == records


@pytest.mark.parametrize("codec,record", [("fp16", 4096), ("bf16", 4096), ("int8", 2064),
                                          ("int4", 1040), ("int2", 528)])
def test_link_bytes_formula(codec, record):
    n = 3 * 2048 + 5  # four records
    assert C.encoded_bytes(codec, n) == 4 * record
    factor = 7 if codec in ("int4", "int2") else 2 * 7 / 8  # an allgather of all, or a2a + ag
    assert link_bytes(codec, n, 8) == factor * 4 * record
    assert link_bytes(None, n, 8) == 2 * 7 / 8 * 4 * n
    assert link_bytes(codec, n, 1) == 0.0


def test_reducer_plans_tables_within_the_kernel_limit_and_counts_encoded_bytes():
    tensors = [torch.zeros(10) for _ in range(C.MAX_TENSORS_PER_DELTA_LAUNCH + 3)]
    anchor = [t.clone() for t in tensors]
    r = DeltaReducer("int8", tensors, anchor, bucket_cap_bytes=1 << 20)
    assert [len(b.segments) for b in r.buckets] == [C.MAX_TENSORS_PER_DELTA_LAUNCH, 3]
    assert r.nbytes == 2 * 2064 and len(r.residuals) == len(tensors)
    assert DeltaReducer("bf16", tensors, anchor, 1 << 20).residuals == []
    with pytest.raises(ValueError, match=r"compression must be one of fp16, bf16, int8, int4, "
                                         r"int2, a TopK, got 'int3'"):
        DeltaReducer("int3", tensors, anchor, 1 << 20)
    assert type(make_reducer("int2", tensors, anchor, 1 << 20)) is GatheredDeltas
    assert type(make_reducer("int8", tensors, anchor, 1 << 20)) is DeltaReducer
    assert make_reducer("int4", tensors, anchor, 1 << 20).nbytes == 2 * 1040


@pytest.mark.parametrize("codec, described", [
    ("int8", "int8 deltas"), ("int2", "int2 deltas, all gathered"),
    (TopK(0.02, values="int2"), "top 0.02 (41 of 2048) int2 deltas, all gathered")])
def test_without_error_feedback_a_reducer_keeps_no_residuals(codec, described):
    tensors = [torch.zeros(10), torch.zeros(3)]
    anchor = [t.clone() for t in tensors]
    kept = make_reducer(codec, tensors, anchor, 1 << 20)
    dropped = make_reducer(codec, tensors, anchor, 1 << 20, error_feedback=False)
    assert len(kept.residuals) == 2 and dropped.residuals == []
    assert kept.describe() == described
    assert dropped.describe() == described + ", without error feedback"


class GatherAll:
    """A stand-in for Horovod's allgather among ranks simulated in one process: it returns
    the contributions the test set in ``parts``, in rank order."""

    def __init__(self):
        self.parts = []

    def allgather(self, buffer, name, process_set):
        return torch.cat(self.parts)

    def wait(self, handle, deadline):
        return handle


@pytest.mark.parametrize("codec", ["int4", "int2", TopK(0.02, values="int2")])
@pytest.mark.parametrize("to_gradient", [False, True])
def test_gathered_reduction_sums_every_contribution_in_rank_order(codec, to_gradient):
    """Three ranks of one group: each ends at anchor + the mean of the decoded contributions
    (or, for the outer optimizer, at minus that mean), bit-identical; each keeps its own
    residual."""
    g = torch.Generator().manual_seed(4)
    sizes = [3000, 7, 2048]
    anchor0 = [torch.randn(n, generator=g) for n in sizes]
    ranks, exchange = [], GatherAll()
    for r in range(3):
        x = [a + 0.01 * (r + 1) * torch.randn(a.shape, generator=g) for a in anchor0]
        ranks.append((x, [a.clone() for a in anchor0],))
    reducers = [make_reducer(codec, x, a, 1 << 20, exchange) for x, a in ranks]
    exchange.parts = [red.encode(0) for red in reducers]
    n = sum(sizes)
    if isinstance(codec, TopK):
        assert reducers[0].nbytes == 3 * 112  # 41 of 2048 kept, 2-bit values: 112-byte records
        mean = ref_topk_sum(torch.cat(exchange.parts), 3, n, 41, "int2", 1 / 3)
    else:
        mean = sum(ref_decode(p, codec, n) for p in exchange.parts) * torch.tensor(1 / 3)
    for red, (x, a) in zip(reducers, ranks):
        got = run_steps(red.steps(0, exchange.parts[0], None, [0, 1, 2], 0, 1 / 3, "t"), None)
        red.finish(0, got, to_gradient=to_gradient, scale=1 / 3)
        want = -mean if to_gradient else torch.cat(anchor0) + mean
        assert torch.equal(torch.cat(x), want)
        assert torch.equal(torch.cat(a), torch.cat(anchor0) if to_gradient else want)
    residual = [torch.cat(red.residuals) for red in reducers]
    assert not torch.equal(residual[0], residual[1])
    assert all(r.abs().max() > 0 for r in residual)


def test_drop_contribution_is_a_zero_delta():
    x, a = [torch.tensor([1.0, 2.0])], [torch.tensor([0.5, 0.25])]
    r = DeltaReducer("int8", x, a, 1 << 20)
    r.residuals[0].fill_(3.0)
    r.drop_contribution()
    assert torch.equal(x[0], a[0]) and torch.equal(r.residuals[0], torch.zeros(2))
