import pytest

from hvd_hier.config.levels import Level
from hvd_hier.topology import groups as topology


@pytest.mark.parametrize("ranks,size,hosts,message", [
    ([0, 1, 2, 3], 3, None, "group_size=3 does not divide the 4 ranks of process_set; pick a divisor of 4 or group_size='local'"),
    ([0, 1, 2, 3], 5, None, "group_size=5 is larger than process_set, which has 4 ranks"),
    ([0, 1, 2, 3], 0, None, "group_size must be an integer >= 1 or 'local', got 0"),
    ([0, 1, 2, 3], -2, None, "group_size must be an integer >= 1 or 'local', got -2"),
    ([0, 1, 2, 3], "node", None, "group_size must be an integer >= 1 or 'local', got 'node'"),
    ([0, 1, 2, 3], 2.0, None, "group_size must be an integer >= 1 or 'local', got 2.0"),
    ([0, 1, 2, 3], True, None, "group_size must be an integer >= 1 or 'local', got True"),
    ([0, 1, 2, 3], "local", ["a", "a", "a", "b"],
     "group_size='local' needs the same number of ranks on every host, got {'a': 3, 'b': 1}; pass an integer group_size that divides 4"),
])
def test_bad_group_sizes(ranks, size, hosts, message):
    with pytest.raises(ValueError) as info:  # the two-level form: its levels have no name
        topology.plan_level_groups(ranks, [Level(1, size), Level(2, "all")], hosts, ["", ""])
    assert str(info.value) == message


def test_groups_of_a_subset_must_exist_already():
    # the whole job, one group, or groups of one rank: nothing to ask
    topology.check_can_create([[0, 1], [2, 3]], set(), world_size=4)
    topology.check_can_create([[0, 1, 2]], set(), world_size=8)
    topology.check_can_create([[0], [1]], set(), world_size=8)
    topology.check_can_create([[0, 1], [2, 3]], {(0, 1), (2, 3)}, world_size=8)
    with pytest.raises(ValueError) as info:
        topology.check_can_create([[0, 1], [2, 3]], {(0, 1)}, world_size=8)
    assert str(info.value) == (
        "process_set [0, 1, 2, 3] is smaller than the job (8 ranks), so the local groups cannot "
        "be created by its ranks alone (Horovod adds a process set only when every rank calls "
        "add_process_set). Create them first on every rank: hvd.add_process_set([2, 3])")


@pytest.mark.parametrize("size,group_size,groups,note", [
    (4, 2, [[0, 1], [2, 3]], None),
    (6, 4, [[0, 1, 2], [3, 4, 5]],
     "group_size=4 does not divide the 6 ranks; using groups of 3, the largest divisor of 6 not above 4"),
    (2, 4, [[0, 1]],
     "group_size=4 is larger than the 2 ranks; using groups of 2, the largest divisor of 2 not above 4"),
    (5, 2, [[0], [1], [2], [3], [4]],
     "group_size=2 does not divide the 5 ranks; using groups of 1, the largest divisor of 5 not above 2"),
    (3, 1, [[0], [1], [2]], None),
    (1, 8, [[0]], "group_size=8 is larger than the 1 rank; using groups of 1, the largest divisor of 1 not above 8"),
])
def test_elastic_jobs_fit_an_integer_group_size_to_the_new_size(size, group_size, groups, note):
    levels = [Level(1, group_size), Level(2, "all")]  # the two-level form: no level names
    assert topology.adapt_level_groups(list(range(size)), levels, None, ["", ""]) == (
        [groups, [list(range(size))]], [note] if note else [])


def test_elastic_jobs_keep_one_group_per_host_when_hosts_are_uneven():
    levels = [Level(1, "local"), Level(2, "all")]
    adapt = topology.adapt_level_groups
    assert adapt([0, 1, 2, 3], levels, ["a", "a", "b", "b"], ["", ""]) == (
        [[[0, 1], [2, 3]], [[0, 1, 2, 3]]], [])
    assert adapt([0, 1, 2], levels, ["a", "a", "b"], ["", ""]) == (
        [[[0, 1], [2]], [[0, 1, 2]]], ["the hosts hold different numbers of ranks "
                                      "({'a': 2, 'b': 1}); each host stays one local group"])


@pytest.mark.parametrize("groups, lower, cross", [
    ([[0, 1, 2, 3]], [[0, 1], [2, 3]], [[0, 2], [1, 3]]),  # 2 nodes x 2 ranks
    ([list(range(8))], [[0, 1, 2, 3], [4, 5, 6, 7]], [[0, 4], [1, 5], [2, 6], [3, 7]]),
    ([[0, 1, 2, 3], [4, 5, 6, 7]], [[0, 1], [2, 3], [4, 5], [6, 7]],  # two groups
     [[0, 2], [1, 3], [4, 6], [5, 7]]),
    ([list(range(6))], [[4, 0], [5, 1], [2, 3]], [[0, 1, 2], [4, 5, 3]]),  # rank lists
    ([list(range(4))], [[0], [1], [2], [3]], None),  # lower groups of one: nothing to share
    ([list(range(4))], [[0, 1, 2, 3]], None),  # one lower group: already one stage
    ([list(range(5))], [[0, 1], [2, 3, 4]], None),  # unequal sizes
    ([[0, 1, 2, 3], [4, 5]], [[0, 1], [2, 3], [4, 5]], None),  # a group of one lower group
])
def test_cross_groups_pair_the_ranks_at_one_position(groups, lower, cross):
    assert topology.plan_cross_groups(groups, lower) == cross
