"""Levels without processes: the N-level schedule against a definition written out here,
the validation of levels= (every bad input with its message), group planning and nesting,
and the elastic rule level by level."""

import itertools

import pytest

from hvd_hier import HierSchedule, Reduction
from hvd_hier.config.levels import ALL, Level, check_levels, levels_from_args
from hvd_hier.topology.groups import adapt_level_groups, plan_level_groups


def defined_level(t, periods, warmup):
    """The level that averages at step t, from the definition: the outermost whose period
    divides u = t - warmup; None in warmup and when none does."""
    if t <= warmup:
        return None
    u = t - warmup
    due = [i for i, p in enumerate(periods) if u % p == 0]
    return max(due) if due else None


@pytest.mark.parametrize("periods,warmup", [((1, 2, 4), 0), ((3, 6, 12), 2), ((2, 2, 8), 1),
                                            ((1,), 0), ((4, 4), 3), ((1, 3, 3, 9), 0)])
def test_n_level_schedule_matches_the_definition(periods, warmup):
    s = HierSchedule(periods=periods, warmup_steps=warmup)
    counts = [0] * len(periods)
    for t in range(1, 150):
        level = s.level_at(t)
        assert level == defined_level(t, periods, warmup), t
        if level is not None:
            counts[level] += 1
        assert s.level_counts_through(t) == counts, t
        kind = s.reduction_at(t)
        if t <= warmup:
            assert kind is Reduction.SYNC
        elif level is None:
            assert kind is Reduction.NONE
        else:
            assert kind is (Reduction.GLOBAL if level == len(periods) - 1 else Reduction.LOCAL)


@pytest.mark.parametrize("k1,k2,warmup", list(itertools.product([1, 2, 3], [1, 2, 4], [0, 5])))
def test_two_level_form_is_periods_k1_k1k2(k1, k2, warmup):
    a = HierSchedule(k1, k2, warmup)
    b = HierSchedule(periods=(k1, k1 * k2), warmup_steps=warmup)
    assert a.periods == b.periods == (k1, k1 * k2)
    assert all(a.reduction_at(t) == b.reduction_at(t) for t in range(1, 60))
    assert a.counts_through(59) == b.counts_through(59)


def test_an_equal_period_never_runs_the_inner_level():
    s = HierSchedule(periods=(2, 2, 6))
    assert [s.level_at(t) for t in range(1, 7)] == [None, 1, None, 1, None, 2]
    assert s.level_counts_through(60) == [0, 20, 10]


@pytest.mark.parametrize("kwargs,message", [
    (dict(periods=(2, 3)), "the period of levels[1] (3) is not a multiple of the period of levels[0] (2); "
                           "each level's period must be a multiple of the one below"),
    (dict(periods=()), "periods must name at least one level, got none"),
    (dict(periods=(0, 2)), "the period of levels[0] must be an integer >= 1, got 0"),
    (dict(periods=(1, 2), local_steps=1), "pass either periods or local_steps and local_rounds, not both"),
])
def test_bad_periods(kwargs, message):
    with pytest.raises(ValueError) as info:
        HierSchedule(**kwargs)
    assert str(info.value) == message


def test_level_objects():
    assert Level(2, 4) == Level(2, 4) and Level(2, 4) != Level(2, 8)
    assert repr(Level(3, "local")) == "Level(3, 'local')"
    with pytest.raises(AttributeError):
        Level(1, 2).period = 3
    assert check_levels([(1, 2), Level(4, "all")]) == (Level(1, 2), Level(4, "all"))
    assert check_levels([(1, [[0, 1], [2, 3]]), (2, ALL)])[0].group_size == ((0, 1), (2, 3))


@pytest.mark.parametrize("levels,message", [
    ([(2, 2), (3, "all")], "the period of levels[1] (3) is not a multiple of the period of levels[0] (2); "
                           "each level's period must be a multiple of the one below"),
    ([(2, 2), (4, 3), (8, "all")], "levels[1]: group_size=3 is not a multiple of group_size=2 of levels[0], "
                                   "so its groups cannot be unions of the groups below"),
    ([(2, 2), (4, "local")], "levels[1], the outermost level, must span the whole process set "
                             "(group_size 'all' or its size), got 'local'"),
    ([(2, 2), (4, [[0, 1], [2, 3]])], "levels[1], the outermost level, must span the whole process set "
                                      "(group_size 'all' or its size), got ((0, 1), (2, 3))"),
    ([(2, "rack"), (4, "all")], "levels[0]: group_size must be an integer >= 1, 'local', 'all' or a list "
                                "of rank lists, got 'rack'"),
    ([(2, 0), (4, "all")], "levels[0]: group_size must be an integer >= 1, 'local', 'all' or a list of "
                           "rank lists, got 0"),
    ([(2, [[0, 1], [1, 2]]), (4, "all")], "levels[0]: rank 1 is in two groups of [[0, 1], [1, 2]]"),
    ([(2, [[0, 1], []]), (4, "all")], "levels[0]: group_size has an empty group in [[0, 1], []]"),
    ([(0, 2), (4, "all")], "the period of levels[0] must be an integer >= 1, got 0"),
    ([(2.0, 2), (4, "all")], "the period of levels[0] must be an integer >= 1, got 2.0 (float)"),
    ([Level(2, 2, momentum=0.7), (4, "all")], "levels[0]: unknown Level option 'momentum' (= 0.7); "
                                              "the known options are: compression, "
                                              "error_feedback, fragments, outer, overlap_steps"),
    # fragments
    ([(1, 2), Level(8, "all", fragments=3)], "levels[1]: fragments=3 must divide the level's "
                                             "period 8: fragment f is reduced every "
                                             "period/fragments steps in turn"),
    ([(4, 2), Level(8, "all", fragments=4)], "levels[1]: period/fragments = 8/4 = 2 must be a "
                                             "multiple of the period 4 of the level below, which "
                                             "averages the whole model at every fragment's step"),
    ([Level(2, 2, fragments=2), (8, "all")], "levels[0]: fragments=2 is for the outermost level "
                                             "only (the one across the slow link)"),
    ([(1, 2), Level(8, "all", fragments=4, overlap_steps=2)],
     "levels[1]: overlap_steps=2 must be smaller than period/fragments = 8/4 = 2: a fragment's "
     "reduction ends before the next fragment's starts"),
    ([(1, 2), Level(8, "all", fragments=0)], "levels[1]: fragments must be an integer >= 1 (parts "
                                             "of the model reduced in turn), got 0"),
    ([(1, 2), Level(8, "all", fragments=2.0)], "levels[1]: fragments must be an integer >= 1 "
                                               "(parts of the model reduced in turn), got 2.0"),
    # error_feedback
    ([(1, 2), Level(8, "all", compression="fp16", error_feedback=False)],
     "levels[1]: error_feedback=False needs an integer codec or a TopK (int8, int4, int2), got "
     "compression='fp16'"),
    ([(1, 2), Level(8, "all", error_feedback=False)],
     "levels[1]: error_feedback=False needs an integer codec or a TopK (int8, int4, int2), got "
     "compression=None"),
    ([(1, 2), Level(8, "all", compression="int8", error_feedback=0)],
     "levels[1]: error_feedback must be True or False, got 0"),
    ([Level(2, 2, compression="int3"), (4, "all")], "levels[0]: compression must be one of fp16, "
                                                    "bf16, int8, int4, int2, a TopK (or None), got 'int3'"),
    ([(2, 2), Level(4, "all", outer=0.7)], "levels[1]: outer must be a callable that returns a "
                                           "torch.optim.Optimizer over the tensors it is given (e.g. "
                                           "functools.partial(torch.optim.SGD, lr=0.7, momentum=0.9, "
                                           "nesterov=True)), got 0.7"),
    ([(2, 2, 3)], "levels[0] must be a (period, group_size) pair or hvd_hier.Level, got (2, 2, 3)"),
    ([], "levels must name at least one level, got an empty list"),
    ("all", "levels must be a list of (period, group_size) pairs or hvd_hier.Level, got 'all'"),
])
def test_bad_levels_name_the_level_and_the_value(levels, message):
    with pytest.raises(ValueError) as info:
        check_levels(levels)
    assert str(info.value) == message


def test_the_defaults_of_fragments_and_error_feedback_are_no_option():
    assert Level(8, "all", fragments=1, error_feedback=True) == Level(8, "all")
    assert check_levels([(1, 2), Level(8, "all", fragments=4, overlap_steps=1,
                                       compression="int2", error_feedback=False)])[1].options == {
        "fragments": 4, "overlap_steps": 1, "compression": "int2", "error_feedback": False}


def test_overlap_steps_zero_is_no_option():
    assert Level(4, "all", overlap_steps=0) == Level(4, "all")
    assert Level(4, "all", overlap_steps=3).options == {"overlap_steps": 3}
    assert levels_from_args(None, 1, 8, 2, overlap_steps=7) == (
        Level(1, 2), Level(8, "all", overlap_steps=7))
    assert check_levels([Level(1, 1, overlap_steps=0), Level(4, "all", overlap_steps=3)]) == (
        Level(1, 1), Level(4, "all", overlap_steps=3))


def test_the_two_level_shorthand():
    assert levels_from_args(None, None, None, None) == (Level(4, "local"), Level(16, "all"))
    assert levels_from_args(None, 2, 3, 4) == (Level(2, 4), Level(6, "all"))
    with pytest.raises(ValueError) as info:
        levels_from_args([(1, 2), (2, "all")], 2, None, "local")
    assert str(info.value) == ("pass either levels= or local_steps, group_size, not both: "
                               "levels=[(K1, S), (K1 * K2, 'all')] is the two-level form")


RANKS = list(range(8))
HOSTS = ["a"] * 4 + ["b"] * 4


def test_plan_three_levels():
    lv = check_levels([(1, 2), (2, "local"), (4, "all")])
    assert plan_level_groups(RANKS, lv, HOSTS) == [
        [[0, 1], [2, 3], [4, 5], [6, 7]], [[0, 1, 2, 3], [4, 5, 6, 7]], [RANKS]]
    racks = check_levels([(1, [[0, 1, 2, 3, 4, 5], [6, 7]]), (3, 8)])
    assert plan_level_groups(RANKS, racks, HOSTS) == [[[0, 1, 2, 3, 4, 5], [6, 7]], [RANKS]]


@pytest.mark.parametrize("levels,message", [
    ([(1, 3), (2, "all")], "levels[0]: group_size=3 does not divide the 8 ranks of process_set; pick a "
                           "divisor of 8 or group_size='local'"),
    ([(1, 2), (2, 4)], "levels[1], the outermost level, must span the whole process set of 8 ranks, got "
                       "groups [[0, 1, 2, 3], [4, 5, 6, 7]]"),
    ([(1, [[0, 1, 2], [3, 4, 5, 6, 7]]), (2, 4), (4, "all")],
     "the groups of levels[1] ([[0, 1, 2, 3], [4, 5, 6, 7]]) are not unions of the groups of levels[0] "
     "([[0, 1, 2], [3, 4, 5, 6, 7]]): group [3, 4, 5, 6, 7] of levels[0] is split; each level's groups "
     "must be made of whole groups of the level below"),
    ([(1, [[0, 1], [2, 3]]), (2, "all")], "levels[0]: the groups [[0, 1], [2, 3]] must partition the "
                                          "process set [0, 1, 2, 3, 4, 5, 6, 7], but misses ranks [4, 5, 6, 7]"),
    ([(1, [[0, 1, 2, 3, 4, 5, 6, 7, 9]]), (2, "all")],
     "levels[0]: the groups [[0, 1, 2, 3, 4, 5, 6, 7, 9]] must partition the process set "
     "[0, 1, 2, 3, 4, 5, 6, 7], but names ranks [9] outside it"),
])
def test_plan_refuses_what_does_not_fit(levels, message):
    with pytest.raises(ValueError) as info:
        plan_level_groups(RANKS, check_levels(levels), HOSTS)
    assert str(info.value) == message


def test_local_level_needs_even_hosts():
    with pytest.raises(ValueError) as info:
        plan_level_groups(RANKS, check_levels([(1, "local"), (2, "all")]), ["a"] * 5 + ["b"] * 3)
    assert str(info.value) == ("levels[0]: group_size='local' needs the same number of ranks on every "
                               "host, got {'a': 5, 'b': 3}")


def test_elastic_rule_level_by_level():
    lv = check_levels([(1, 2), (2, 4), (4, "all")])
    assert adapt_level_groups(RANKS, lv) == (
        [[[0, 1], [2, 3], [4, 5], [6, 7]], [[0, 1, 2, 3], [4, 5, 6, 7]], [RANKS]], [])
    groups, notes = adapt_level_groups(list(range(6)), lv)
    assert groups == [[[0, 1], [2, 3], [4, 5]], [[0, 1], [2, 3], [4, 5]], [list(range(6))]]
    assert notes == ["levels[1]: group_size=4 does not divide the 6 ranks; using groups of 2, the largest "
                     "divisor of 6 not above 4 that is a multiple of 2"]
    groups, notes = adapt_level_groups(list(range(3)), lv)
    assert groups == [[[0], [1], [2]], [[0, 1, 2]], [[0, 1, 2]]]
    assert notes == ["levels[0]: group_size=2 does not divide the 3 ranks; using groups of 1, the largest "
                     "divisor of 3 not above 2",
                     "levels[1]: group_size=4 is larger than the 3 ranks; using groups of 3, the largest "
                     "divisor of 3 not above 4"]
    # the two-level shorthand's notes name no level, as they always have
    _, notes = adapt_level_groups(list(range(4)), check_levels([(1, 3), (2, "all")]), labels=["", ""])
    assert notes == ["group_size=3 does not divide the 4 ranks; using groups of 2, the largest divisor "
                     "of 4 not above 3"]


def test_elastic_rule_cuts_blocks_along_hosts():
    lv = check_levels([(1, 2), (2, "local"), (4, "all")])
    groups, notes = adapt_level_groups(list(range(6)), lv, ["a"] * 3 + ["b"] * 3)
    assert groups == [[[0, 1], [2], [3], [4, 5]], [[0, 1, 2], [3, 4, 5]], [list(range(6))]]
    assert notes == ["levels[0]: groups cut along those of levels[1] to stay nested: [[0, 1], [2], [3], [4, 5]]"]
    _, notes = adapt_level_groups(list(range(6)), check_levels([(1, "local"), (2, "all")]),
                                  ["a"] * 4 + ["b"] * 2, labels=["", ""])
    assert notes == ["the hosts hold different numbers of ranks ({'a': 4, 'b': 2}); each host stays one "
                     "local group"]
    with pytest.raises(ValueError) as info:
        adapt_level_groups(RANKS, check_levels([(1, [[0, 1, 2, 3], [4, 5, 6, 7]]), (2, "all")]))
    assert str(info.value) == ("levels[0]: explicit rank lists cannot follow an elastic job's changing "
                               "ranks; use an integer group_size, 'local' or 'all'")
