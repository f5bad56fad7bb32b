"""Streaming fragments without processes: the split, the schedule of the fragments, what a
fragmented level is built of and says of itself, and the errors before any collective."""

import functools

import pytest
import torch

import hvd_hier
from hvd_hier import HierSchedule, Level
from hvd_hier.config.options import make_config
from hvd_hier.reduce.immediate import CompressedDeltas, PlainAverage
from hvd_hier.reduce.staged import Staged
from hvd_hier.runtime.fragments import FragmentedLevel, plan_fragments
from hvd_hier.topology.process_sets import LevelTopology
from test_level_runtime import levels_of, node

NESTEROV = functools.partial(torch.optim.SGD, lr=0.7, momentum=0.9, nesterov=True)


@pytest.mark.parametrize("sizes, count, expected", [
    # largest first: 2600 -> f0, 1500 -> f1, 900 -> f2, 700 -> f3, 300 -> f3 (700 the least)
    ([700, 1500, 300, 2600, 900], 4, [[3], [1], [4], [0, 2]]),
    ([700, 1500, 300, 2600, 900], 2, [[2, 3], [0, 1, 4]]),
    ([10] * 8, 4, [[0, 4], [1, 5], [2, 6], [3, 7]]),  # equal layers: strided
    ([5, 5], 2, [[0], [1]]),
    ([1, 100, 1, 1], 2, [[1], [0, 2, 3]]),  # in order, the first fragment would hold both
])
def test_the_largest_tensor_left_joins_the_lightest_fragment(sizes, count, expected):
    assert plan_fragments(sizes, count) == expected


def test_the_fragments_take_turns_within_the_period():
    s = HierSchedule(periods=(2, 8), warmup_steps=1, fragments=(1, 4))
    assert s.steps == (2, 2)
    # u = t - 1: fragment f at u = 2(f + 1) mod 8, the local level at none (2 divides all)
    assert [(s.level_at(t), s.fragment_at(t)) for t in range(2, 12)] == [
        (None, None), (1, 0), (None, None), (1, 1), (None, None), (1, 2), (None, None),
        (1, 3), (None, None), (1, 0)]
    assert s.level_counts_through(17) == [0, 8]
    three = HierSchedule(periods=(1, 2, 8), fragments=(1, 1, 2))
    assert [three.level_at(t) for t in range(1, 9)] == [0, 1, 0, 2, 0, 1, 0, 2]
    assert [three.fragment_at(t) for t in (4, 8, 12)] == [0, 1, 0]
    with pytest.raises(ValueError, match=r"levels\[1\]: fragments=3 must divide the period 8"):
        HierSchedule(periods=(2, 8), fragments=(1, 3))


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8),
                               torch.nn.Linear(8, 4))


def test_a_fragmented_level_is_one_runtime_per_fragment():
    model = mlp()
    local, top = levels_of(model, levels=[(1, 4), Level(8, "all", fragments=2, outer=NESTEROV,
                                                    compression="int2")])
    for lv, lt in zip((local, top), node()):
        lv.bind(lt)
    assert type(top) is FragmentedLevel and len(top.parts) == 2
    ids = [id(p) for p in model.parameters()]
    # bytes 256, 32, 256, 32, 128, 16, largest first: 0 -> f0, 2 -> f1, 4 -> f0 (a tie),
    # then 1, 3 and 5 -> f1 (288, 320, 336 against 384)
    assert [[ids.index(id(t)) for t in p.tensors] for p in top.parts] == [[0, 4], [1, 2, 3, 5]]
    for f, part in enumerate(top.parts):
        assert part.ctx.lower_done and part.ctx.indices == tuple(
            ids.index(id(t)) for t in part.tensors)
        assert part.stats is top.stats and part.in_flight is top.in_flight
        assert type(part.strategy) is Staged and part.tag == f"level1.f{f}"
        assert part.anchor.outer is not None and part.reducer.residuals
        assert [id(t) for t in part.anchor.outer.param_groups[0]["params"]] == [
            id(t) for t in part.anchor.anchor[:len(part.tensors)]]
    assert repr(top) == ("Level 1: 8 ranks, every 8 steps, 2 fragments, one every 4 steps, "
                         "two-stage over 2 groups of 4, int2 deltas, all gathered, outer "
                         "SGD(lr=0.7, momentum=0.9, nesterov)")
    assert not top.anchor.taken
    top.anchor.take()
    assert top.anchor.taken and top.state_dict()["taken"]
    assert len(top.state_dict()["fragments"]) == 2
    # an elastic reset (agreement.rebuild) zeroes what every fragment's codec lost
    for part in top.parts:
        for r in part.reducer.residuals:
            r.fill_(0.25)
    top.reset_residuals()
    assert all(r.abs().max() == 0 for p in top.parts for r in p.reducer.residuals)


def test_one_stage_fragments_reduce_at_once():
    only = levels_of(mlp(), levels=[Level(4, "all", fragments=2)])[0]
    only.bind(LevelTopology([list(range(4))], list(range(4)), process_set=object()))
    assert [type(p.strategy) for p in only.parts] == [PlainAverage, PlainAverage]
    assert only.anchor is None and only.state_dict() is None
    coded = levels_of(mlp(), levels=[(1, 1), Level(6, "all", fragments=3, compression="int8")])[1]
    coded.bind(LevelTopology([list(range(4))], list(range(4)), process_set=object()))
    assert [type(p.strategy) for p in coded.parts] == [CompressedDeltas] * 3


def test_bad_fragments_are_named_before_any_collective():
    with pytest.raises(ValueError) as info:
        levels_of(mlp(), levels=[(1, 2), Level(8, "all", fragments=8)])
    assert str(info.value) == ("levels[1]: fragments=8 is more than the 6 tensors the level "
                               "averages (a fragment holds whole tensors)")
    with pytest.raises(ValueError) as info:
        make_config(levels=[(1, 2), Level(8, "all", fragments=2)], flat_storage=True)
    assert str(info.value) == ("levels[1]: fragments=2 reduces parts of the model, which flat "
                               "storage keeps in shared buffers; pass flat_storage=False")


def test_the_public_names():
    assert hvd_hier.Level(8, "all", fragments=4).options == {"fragments": 4}
