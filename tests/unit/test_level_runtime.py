"""A level is an object that chooses its reduction once: which strategy each kind of level
gets, what its ``repr`` says, and that the optimizer's state keeps one object per level
(without processes: the groups are given as ``LevelTopology`` values)."""

import functools

import pytest
import torch

from hvd_hier.config.options import collect_tensors, make_config
from hvd_hier.reduce.buckets import BucketAverager
from hvd_hier.reduce.immediate import CompressedDeltas, PlainAverage
from hvd_hier.reduce.staged import Staged
from hvd_hier.reduce.stages import OneStage, TwoStage
from hvd_hier.reduce.strategy import Context
from hvd_hier.runtime.build import build_levels
from hvd_hier.runtime.level import describe_outer
from hvd_hier.runtime.state import Stats
from hvd_hier.topology.process_sets import LevelTopology

NESTEROV = functools.partial(torch.optim.SGD, lr=0.7, momentum=0.9, nesterov=True)


def levels_of(model=None, **kwargs):
    """The levels ``make_config(**kwargs)`` builds for ``model`` (a Linear(3, 2) by default),
    without processes."""
    model = torch.nn.Linear(3, 2) if model is None else model
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    config = make_config(**kwargs)
    found = collect_tensors(opt, list(model.named_parameters()))
    averager = BucketAverager(found.all, config.bucket_cap_bytes)
    ctx = Context(averager, config.nonfinite, config.deterministic, config.flat_storage, Stats())
    return build_levels(config, found, averager, ctx)


def node(rank=0):
    """8 ranks, nodes of 4: this rank's node and the job, with two-stage cross groups."""
    inner = LevelTopology([[0, 1, 2, 3], [4, 5, 6, 7]], [0, 1, 2, 3], process_set=object())
    outer = LevelTopology([list(range(8))], list(range(8)), process_set=object(),
                          cross_groups=[[0, 4], [1, 5], [2, 6], [3, 7]], cross_group=[0, 4],
                          cross_set=object(), share=0, shares=4)
    return [inner, outer]


def bind(levels, topologies):
    for lv, lt in zip(levels, topologies):
        lv.bind(lt)
    return levels


def test_the_two_level_form_names_its_levels_and_their_strategies():
    local, glob = bind(levels_of(local_steps=2, local_rounds=8, group_size=4), node())
    assert type(local.strategy) is PlainAverage and local.immediate is local.strategy
    assert type(glob.strategy) is Staged and type(glob.strategy.route) is TwoStage
    assert repr(local) == "Local: 4 ranks, every 2 steps, plain average in buckets"
    assert repr(glob) == ("Global: 8 ranks, every 16 steps, two-stage over 2 groups of 4, "
                          "plain average in pieces")


def test_int8_outer_and_overlap_in_one_line():
    levels = levels_of(local_steps=1, local_rounds=16, group_size=4, global_compression="int8",
                       outer=NESTEROV, overlap_steps=7)
    local, glob = bind(levels, node())
    assert glob.strategy.compressed and glob.strategy.overlap == 7
    assert type(glob.immediate) is CompressedDeltas
    assert repr(glob) == ("Global: 8 ranks, every 16 steps, two-stage over 2 groups of 4, "
                          "int8 deltas, overlap 7, outer SGD(lr=0.7, momentum=0.9, nesterov)")


def test_one_stage_levels_choose_the_immediate_strategies():
    flat_job = [LevelTopology([[0, 1]], [0, 1], process_set=object())]
    lv, = bind(levels_of(levels=[(4, "all")]), flat_job)
    assert type(lv.strategy) is PlainAverage
    lv, = bind(levels_of(levels=[__import__("hvd_hier").Level(4, "all", compression="bf16")]),
               flat_job)
    assert type(lv.strategy) is CompressedDeltas and repr(lv) == (
        "Level 0: 2 ranks, every 4 steps, bf16 deltas")
    lv, = bind(levels_of(levels=[__import__("hvd_hier").Level(4, "all", overlap_steps=1)]),
               flat_job)
    assert type(lv.strategy) is Staged and type(lv.strategy.route) is OneStage
    assert repr(lv) == "Level 0: 2 ranks, every 4 steps, plain average in pieces, overlap 1"


def test_a_compressed_level_of_one_rank_averages_plainly():
    alone = [LevelTopology([[0]], [0], process_set=None)]
    lv, = bind(levels_of(levels=[__import__("hvd_hier").Level(4, "all", compression="int8")]),
               alone)
    assert type(lv.strategy) is PlainAverage and lv.reducer is not None


def test_before_its_groups_are_built_a_level_says_so():
    local, glob = levels_of(local_steps=2, local_rounds=4)
    assert repr(glob) == "Global: every 8 steps, groups not built yet"
    assert glob.strategy is None and glob.below == [local] and local.below == []


def test_each_level_owns_its_anchor_codec_and_statistics():
    local, glob = levels_of(local_steps=2, local_rounds=4, global_compression="int8")
    assert local.anchor is None and local.reducer is None
    assert glob.anchor is not None and glob.reducer.codec == "int8"
    assert glob.reducer.anchor == glob.anchor.anchor  # deltas from the level's own anchor
    assert local.stats is not glob.stats
    assert local.state_dict() is None
    saved = glob.state_dict()
    assert sorted(saved) == ["anchor", "compression", "outer", "outer_name", "taken"]
    assert glob.state_dict(residuals=False)["compression"] is None


@pytest.mark.parametrize("defaults,expected", [
    (dict(lr=1.0), "SGD(lr=1, momentum=0)"),
    (dict(lr=0.5, momentum=0.5, nesterov=True), "SGD(lr=0.5, momentum=0.5, nesterov)"),
])
def test_describe_outer(defaults, expected):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], **defaults)
    assert describe_outer(opt) == expected
