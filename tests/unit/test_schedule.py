"""The schedule alone, without processes, against the definition written out in
tests/reference.py."""

import itertools

import numpy as np
import pytest

from hvd_hier import HierSchedule, Reduction
from reference import reference_reduction


@pytest.mark.parametrize("k1,k2,warmup", list(itertools.product([1, 2, 3, 5], [1, 2, 4], [0, 1, 7])))
def test_reduction_matches_definition(k1, k2, warmup):
    s = HierSchedule(k1, k2, warmup)
    for t in range(1, 120):
        assert s.reduction_at(t).value == reference_reduction(t, k1, k2, warmup), t


@pytest.mark.parametrize("k1,k2,warmup", [(1, 1, 0), (2, 3, 4), (4, 8, 0), (3, 1, 2)])
def test_counts_are_the_enumeration(k1, k2, warmup):
    s = HierSchedule(k1, k2, warmup)
    running = {"sync": 0, "local": 0, "global": 0, "none": 0}
    assert s.counts_through(0) == running
    for t in range(1, 200):
        running[s.reduction_at(t).value] += 1
        assert s.counts_through(t) == running, t
        # every K1-th step after warmup averages, locally or globally
        assert running["local"] + running["global"] == max(0, t - warmup) // k1


def test_a_worked_example():
    s = HierSchedule(local_steps=2, local_rounds=3, warmup_steps=1)
    assert [s.reduction_at(t) for t in range(1, 9)] == [
        Reduction.SYNC, Reduction.NONE, Reduction.LOCAL, Reduction.NONE, Reduction.LOCAL,
        Reduction.NONE, Reduction.GLOBAL, Reduction.NONE]
    assert s.period == 6


def test_special_cases():
    sync = HierSchedule(1, 1)
    assert all(sync.reduction_at(t) is Reduction.GLOBAL for t in range(1, 20))
    # K2 = 1: every averaging is global (K-AVG with K = K1)
    kavg = HierSchedule(3, 1)
    assert [kavg.reduction_at(t).value for t in range(1, 7)] == ["none", "none", "global"] * 2


def test_numpy_integers_are_accepted():
    s = HierSchedule(np.int64(2), np.int32(3), np.int16(1))
    assert (s.local_steps, s.local_rounds, s.warmup_steps) == (2, 3, 1)
    assert type(s.local_steps) is int


@pytest.mark.parametrize("kwargs,message", [
    (dict(local_steps=0, local_rounds=1), "local_steps must be an integer >= 1, got 0"),
    (dict(local_steps=1.0, local_rounds=1), "local_steps must be an integer >= 1, got 1.0 (float)"),
    (dict(local_steps=None, local_rounds=1), "local_steps must be an integer >= 1, got None (NoneType)"),
    (dict(local_steps=1, local_rounds=False), "local_rounds must be an integer >= 1, got False (bool)"),
    (dict(local_steps=1, local_rounds=1, warmup_steps=-3), "warmup_steps must be an integer >= 0, got -3"),
])
def test_bad_values(kwargs, message):
    with pytest.raises(ValueError) as info:
        HierSchedule(**kwargs)
    assert str(info.value) == message


def test_step_zero_is_not_a_step():
    with pytest.raises(ValueError) as info:
        HierSchedule(2, 2).reduction_at(0)
    assert str(info.value) == "t must be an integer >= 1, got 0"
