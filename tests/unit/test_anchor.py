"""The anchor and outer step of a level (hvd_hier.outer.anchor), without processes: the checks of
``outer``, the closed-form outer step, flat storage, buffers, state dicts, and the shorthand's
outer level."""

import functools

import pytest
import torch

from hvd_hier.comm.collectives import cpu_copy
from hvd_hier.config.levels import Level, check_levels, describe_callable
from hvd_hier.config.options import Tensors, make_config
from hvd_hier.outer.anchor import Anchor, make_outer
from hvd_hier.reduce.buckets import BucketAverager
from hvd_hier.reduce.flat import FlatAverager
from hvd_hier.reduce.strategy import Context
from hvd_hier.runtime.build import build_levels
from hvd_hier.runtime.state import Stats

SGD = functools.partial(torch.optim.SGD, lr=0.5, momentum=0.5, nesterov=True)
EXAMPLE = "functools.partial(torch.optim.SGD, lr=0.7, momentum=0.9, nesterov=True)"


def tensors():
    return [torch.tensor([1.0, 2.0, -4.0], dtype=torch.float64),
            torch.tensor([[0.5, 0.25]], dtype=torch.float64),
            torch.tensor([8.0, 16.0], dtype=torch.float64)]  # the last one: a buffer


def not_an_optimizer(ts):
    return 5


def other_tensors(ts):
    return torch.optim.SGD([torch.zeros(1)], lr=1.0)


def raises(ts):
    raise RuntimeError("boom")


@pytest.mark.parametrize("outer,message", [
    ("sgd", f"levels[1]: outer must be a callable that returns a torch.optim.Optimizer over the "
            f"tensors it is given (e.g. {EXAMPLE}), got 'sgd'"),
    (not_an_optimizer, "levels[1]: outer=test_anchor.not_an_optimizer must return a "
                       "torch.optim.Optimizer, got int"),
    (other_tensors, "levels[1]: outer=test_anchor.other_tensors must return an optimizer over "
                    "exactly the 2 tensors it is given, got one over 1 tensor(s) that are not "
                    f"those; build it from its argument, e.g. {EXAMPLE}"),
    (raises, "levels[1]: outer=test_anchor.raises raised RuntimeError when called with the 2 "
             "parameter tensors: boom"),
    (functools.partial(torch.optim.SGD, lrr=1.0),
     "levels[1]: outer=partial(torch.optim.sgd.SGD, lrr=1.0) raised TypeError when called with "
     "the 2 parameter tensors: SGD.__init__() got an unexpected keyword argument 'lrr'"),
])
def test_bad_outer_names_the_level_and_the_value(outer, message):
    with pytest.raises(ValueError) as info:
        make_outer("levels[1]", outer, tensors()[:2])
    assert str(info.value) == message


def test_describe_callable_is_the_same_in_every_process():
    assert describe_callable(SGD) == ("partial(torch.optim.sgd.SGD, lr=0.5, momentum=0.5, "
                                      "nesterov=True)")
    assert describe_callable(lambda ts: None) == "test_anchor.test_describe_callable_is_the_same_in_every_process.<locals>.<lambda>"
    assert Level(4, "all", outer=SGD).describe() == (
        4, "all", (("outer", "partial(torch.optim.sgd.SGD, lr=0.5, momentum=0.5, nesterov=True)"),))


def test_the_shorthand_puts_outer_on_the_outermost_level():
    config = make_config(local_steps=2, local_rounds=3, group_size=2, outer=SGD)
    assert config.levels == (Level(2, 2), Level(6, "all", outer=SGD))
    assert check_levels([(1, 2), Level(2, "all", outer=SGD)])[1].options == {"outer": SGD}


def outer_reference(x_bar, mean, buf, lr=0.5, m=0.5):
    """SGD with Nesterov momentum from its definition: g = x̄ - ḡ; b = m b + g; x̄ -= lr (g + m b)."""
    g = x_bar - mean
    buf = g.clone() if buf is None else m * buf + g
    return x_bar - lr * (g + m * buf), buf


@pytest.mark.parametrize("flat", [False, True])
def test_outer_step_in_closed_form(flat):
    ts = tensors()
    if flat:
        averager = FlatAverager(ts, bucket_cap_bytes=1 << 20, names=["a", "b", "buf"])
        anchor = Anchor("levels[0]", ts, 2, SGD, averager.buckets)
        assert all(a.untyped_storage().data_ptr() == anchor.storages[0].data_ptr()
                   for a in anchor.anchor)
    else:
        anchor = Anchor("levels[0]", ts, 2, SGD)
    assert not anchor.taken
    anchor.take()
    x_bar = [t.clone() for t in ts]
    bufs = [None, None, None]
    for k in range(3):  # three reductions; the group's mean is written into the tensors
        means = [t * 0.5 + k for t in x_bar]
        with torch.no_grad():
            for t, m in zip(ts, means):
                t.copy_(m)
        anchor.outer_step()
        for i in range(2):
            x_bar[i], bufs[i] = outer_reference(x_bar[i], means[i], bufs[i])
            assert torch.equal(ts[i], x_bar[i]) and torch.equal(anchor.anchor[i], x_bar[i])
        x_bar[2] = means[2]  # the buffer: its plain mean, never through the outer optimizer
        assert torch.equal(ts[2], means[2]) and torch.equal(anchor.anchor[2], means[2])
        assert all(a.grad is None for a in anchor.anchor)


def test_sgd_lr1_is_plain_averaging():
    ts = tensors()
    anchor = Anchor("levels[0]", ts, 2, functools.partial(torch.optim.SGD, lr=1.0))
    anchor.take()
    means = [t * 0.75 for t in ts]
    with torch.no_grad():
        for t, m in zip(ts, means):
            t.copy_(m)
    anchor.outer_step()
    assert all(torch.equal(t, m) for t, m in zip(ts, means))


def test_state_dict_round_trip_and_reset():
    ts = tensors()
    a = Anchor("levels[0]", ts, 2, SGD)
    assert a.state_dict()["anchor"] is None
    a.take()
    with torch.no_grad():
        ts[0].add_(1.0)
    a.outer_step()
    saved = a.state_dict()
    b = Anchor("levels[0]", tensors(), 2, SGD)
    b.load_state_dict(saved)
    assert b.taken and all(torch.equal(x, y) for x, y in zip(a.anchor, b.anchor))
    assert torch.equal(b.outer.state_dict()["state"][0]["momentum_buffer"],
                       a.outer.state_dict()["state"][0]["momentum_buffer"])
    b.reset()
    assert not b.taken and not b.outer.state
    with pytest.raises(ValueError, match=r"levels\[0\]: the saved anchor has 1 tensors"):
        b.load_state_dict({"taken": True, "anchor": [torch.zeros(3)], "outer": saved["outer"]})


def test_one_anchor_per_level_with_outer():
    config = make_config(levels=[Level(1, 2), Level(2, 4, outer=SGD), Level(4, "all")])
    ts = tensors()
    found = Tensors(ts[:2], ["a", "b"], ts[2:])
    averager = BucketAverager(ts, 1 << 20)
    ctx = Context(averager, "raise", False, False, Stats())
    levels = build_levels(config, found, averager, ctx)
    assert [lv.anchor is not None for lv in levels] == [False, True, False]
    assert levels[1].anchor.where == "levels[1]" and levels[1].anchor.nbytes() == 7 * 8
    assert levels[1].reducer is None and levels[1].state_dict()["compression"] is None


def test_portable_state_is_compact_cpu_copies():
    ts = tensors()
    averager = FlatAverager(ts, bucket_cap_bytes=1 << 20, names=["a", "b", "buf"])
    a = Anchor("levels[0]", ts, 2, SGD, averager.buckets)
    a.take()
    state = cpu_copy(a.state_dict())
    for saved, mine in zip(state["anchor"], a.anchor):
        assert torch.equal(saved, mine) and saved.device.type == "cpu"
        # its own compact storage, not a view of the whole flat buffer
        assert saved.untyped_storage().nbytes() == saved.numel() * saved.element_size()
    assert state["outer_name"] == describe_callable(SGD)


def test_another_outer_optimizer_starts_from_zero():
    ts = tensors()
    a = Anchor("levels[1]", ts, 2, SGD)
    a.take()
    a.outer_step()
    saved = a.state_dict()
    adam = functools.partial(torch.optim.Adam, lr=0.1)
    b = Anchor("levels[1]", tensors(), 2, adam)
    with pytest.warns(UserWarning, match=r"levels\[1\]: the saved outer optimizer was "
                                         r"partial\(torch.optim.sgd.SGD, .*\), this one is "
                                         r"partial\(torch.optim.adam.Adam, lr=0.1\); its state "
                                         r"starts from zero"):
        b.load_state_dict(saved)
    assert b.taken and not b.outer.state and b.outer.param_groups[0]["lr"] == 0.1


def test_an_option_given_as_none_is_no_option():
    assert Level(4, "all", outer=None, compression=None) == Level(4, "all")
    assert Level(4, "all", compression=None).describe() == (4, "all", ())


def test_the_shorthand_agrees_and_saves_the_global_options():
    plain = make_config(local_steps=2, local_rounds=2, group_size=2)
    coded = make_config(local_steps=2, local_rounds=2, group_size=2, global_compression="int8")
    assert plain.agreement()["global_options"] == ()
    assert coded.agreement()["global_options"] == (("compression", "int8"),)
    assert "global_options" not in plain.schedule_config()  # older checkpoints still match
    assert coded.schedule_config()["global_options"] == (("compression", "int8"),)
