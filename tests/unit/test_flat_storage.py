"""Persistent flat storage (FlatAverager) in one process: layout, identity, relinking."""

import io
import warnings

import pytest
import torch

from hvd_hier.reduce.flat import FLAT_ALIGN_BYTES, FlatAverager


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 10))


def test_parameters_become_views_with_values_and_identity_kept():
    m = model()
    params = list(m.parameters())
    before = [p.detach().clone() for p in params]
    ids = [id(p) for p in params]
    avg = FlatAverager(params, bucket_cap_bytes=1 << 20)
    assert [id(p) for p in m.parameters()] == ids
    assert len(avg.buckets) == 1
    storage = avg.buckets[0].storage
    for p, b in zip(m.parameters(), before):
        assert torch.equal(p, b)
        assert p.untyped_storage().data_ptr() == storage.untyped_storage().data_ptr()
        assert p.data_ptr() % FLAT_ALIGN_BYTES == 0
        assert isinstance(p, torch.nn.Parameter) and p.requires_grad
    # the layout: in order, each slot on a 64-byte boundary, padding in between
    offsets = [(p.data_ptr() - storage.data_ptr()) // 4 for p in params]
    # conv 216 + 8, batch norm 8 + 8, linear 2880 + 10: sizes rounded up to 16 floats
    assert offsets == [0, 224, 240, 256, 272, 3152]
    assert storage.numel() == 3162
    assert avg.nbytes == storage.numel() * 4


def test_scaling_the_storage_scales_the_parameters_and_the_padding_stays_zero():
    m = model()
    params = list(m.parameters())
    before = [p.detach().clone() for p in params]
    avg = FlatAverager(params, bucket_cap_bytes=1 << 20)
    avg.memory_passes(0.25)
    for p, b in zip(params, before):
        assert torch.equal(p, b * 0.25)
    mask = torch.ones(avg.buckets[0].storage.numel(), dtype=torch.bool)
    storage = avg.buckets[0].storage
    for p in params:
        start = (p.data_ptr() - storage.data_ptr()) // 4
        mask[start:start + p.numel()] = False
    assert int(mask.sum()) == 3162 - sum(p.numel() for p in params) == 32 and torch.count_nonzero(storage[mask]) == 0
    assert avg.pool_bytes() == 0


def test_buckets_respect_the_cap_and_a_large_tensor_gets_its_own():
    tensors = [torch.ones(10), torch.ones(10), torch.ones(100), torch.ones(3),
               torch.ones(0), torch.ones(5, dtype=torch.float64)]
    avg = FlatAverager(tensors, bucket_cap_bytes=128)
    sizes = [(b.storage.dtype, b.storage.numel(), [i for i, _ in b.members]) for b in avg.buckets]
    assert sizes == [(torch.float32, 26, [0, 1]), (torch.float32, 100, [2]),
                     (torch.float32, 3, [3]), (torch.float64, 5, [5])]
    assert tensors[4].numel() == 0  # empty tensors are left where they are


def test_an_optimizer_step_writes_through_to_the_storage():
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9)
    avg = FlatAverager(list(m.parameters()), bucket_cap_bytes=1 << 20)
    x = torch.randn(4, 3, 8, 8)
    m(x).sum().backward()
    expected = [(p - 0.5 * p.grad).detach() for p in m.parameters()]
    opt.step()
    storage = avg.buckets[0].storage
    for p, e in zip(m.parameters(), expected):
        start = (p.data_ptr() - storage.data_ptr()) // 4
        assert torch.equal(storage[start:start + p.numel()].view_as(p), e)


def test_state_dict_round_trip_keeps_the_views():
    m = model()
    avg = FlatAverager(list(m.parameters()) + [b for b in m.buffers() if b.is_floating_point()],
                       bucket_cap_bytes=1 << 20)
    ptrs = [p.data_ptr() for p in m.parameters()]
    saved = io.BytesIO()
    torch.save(m.state_dict(), saved)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    saved.seek(0)
    m.load_state_dict(torch.load(saved))
    assert [p.data_ptr() for p in m.parameters()] == ptrs
    assert avg.relink() == 0
    fresh = model()
    for p, q in zip(m.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(p, q)


def test_channels_last_keeps_its_layout():
    conv = torch.nn.Conv2d(4, 8, 3).to(memory_format=torch.channels_last)
    before = conv.weight.detach().clone()
    stride = conv.weight.stride()
    FlatAverager([conv.weight], bucket_cap_bytes=1 << 20)
    assert conv.weight.stride() == stride and torch.equal(conv.weight, before)


def test_a_reassigned_parameter_is_copied_back_with_a_warning():
    m = model()
    avg = FlatAverager(list(m.parameters()), bucket_cap_bytes=1 << 20)
    weight = m[3].weight
    ptr = weight.data_ptr()
    weight.data = torch.full_like(weight, 2.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert avg.relink() == 1
    assert [str(w.message) for w in caught] == [
        "hvd_hier: tensor 4 no longer uses its flat storage (its .data was re-assigned); its "
        "values are copied back into the storage"]
    assert weight.data_ptr() == ptr and torch.equal(weight, torch.full_like(weight, 2.0))
    avg.memory_passes(0.5)
    assert torch.equal(weight, torch.full_like(weight, 1.0))


def test_a_converted_parameter_is_an_error():
    m = model()
    avg = FlatAverager(list(m.parameters()), bucket_cap_bytes=1 << 20,
                       names=[n for n, _ in m.named_parameters()])
    m.double()
    with pytest.raises(ValueError) as info:
        avg.relink()
    assert str(info.value) == (
        "flat_storage=True: 0.weight changed from shape (8, 3, 3, 3), torch.float32 on cpu to "
        "shape (8, 3, 3, 3), torch.float64 on cpu after the optimizer was created; create the "
        "optimizer after moving or converting the model")


def test_tied_weights_are_refused():
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    other = torch.nn.Parameter(emb.weight.detach()[2:5])  # overlaps, another object
    with pytest.raises(ValueError) as info:
        FlatAverager([emb.weight, other], bucket_cap_bytes=1 << 20, names=["emb", "other"])
    assert str(info.value) == ("flat_storage=True: emb and other share memory (tied weights); "
                               "flat storage would untie them, so pass flat_storage=False")


def test_slices_of_one_tensor_that_do_not_overlap_are_fine():
    base = torch.arange(20, dtype=torch.float32)
    a, b = base[:10], base[10:]
    FlatAverager([a, b], bucket_cap_bytes=1 << 20)
    assert torch.equal(a, torch.arange(10.0)) and torch.equal(b, torch.arange(10.0, 20.0))
    assert a.untyped_storage().data_ptr() != base.untyped_storage().data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_every_dtype(dtype):
    tensors = [torch.arange(n, dtype=torch.float32).to(dtype) for n in (1, 7, 33)]
    avg = FlatAverager(tensors, bucket_cap_bytes=1 << 20)
    avg.memory_passes(0.5)
    for n, t in zip((1, 7, 33), tensors):
        assert t.dtype == dtype and torch.equal(t, (torch.arange(n, dtype=torch.float32) * 0.5).to(dtype))
        assert t.data_ptr() % FLAT_ALIGN_BYTES == 0


def test_plan_flat_layout_is_pure_and_closed_form():
    """The layout alone, on tensors that are not moved: per (device, dtype) in order, offsets
    on 64-byte boundaries, a new buffer at the cap, a larger tensor alone, empty ones skipped."""
    from hvd_hier.reduce.flat import FlatPlan, plan_flat_layout

    f32 = [torch.empty(10), torch.empty(0), torch.empty(5), torch.empty(20)]
    f16 = [torch.empty(3, dtype=torch.float16), torch.empty(40, dtype=torch.float16)]
    tensors = [f32[0], f16[0], f32[1], f32[2], f16[1], f32[3]]
    before = [t.data_ptr() for t in tensors]
    plans = plan_flat_layout(tensors, bucket_cap_bytes=128)  # 32 float32, 64 float16
    cpu = torch.device("cpu")
    assert plans == [
        FlatPlan(cpu, torch.float32, 21, ((0, 0), (3, 16))),  # 10 -> aligned to 16, then 5
        FlatPlan(cpu, torch.float32, 20, ((5, 0),)),          # 16 + 20 > 32: a new buffer
        FlatPlan(cpu, torch.float16, 3, ((1, 0),)),           # 3 -> aligned to 32 halves, + 40 > 64:
        FlatPlan(cpu, torch.float16, 40, ((4, 0),)),          # a new buffer
    ]
    assert plan_flat_layout(f16, bucket_cap_bytes=256) == [
        FlatPlan(cpu, torch.float16, 72, ((0, 0), (1, 32)))]
    assert [t.data_ptr() for t in tensors] == before  # nothing moved
    big = plan_flat_layout([torch.empty(100)], bucket_cap_bytes=64)
    assert big == [FlatPlan(cpu, torch.float32, 100, ((0, 0),))]
