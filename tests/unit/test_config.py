"""DistributedOptimizer's arguments, checked without processes: make_config and
collect_tensors raise the error that names the argument and its value (the multi-rank test
keeps only what needs other ranks: disagreement, groups, hosts, process sets)."""

import warnings

import pytest
import torch

import horovod.torch as hvd
from hvd_hier.config.levels import Level
from hvd_hier.config.options import collect_tensors, make_config


@pytest.mark.parametrize("kwargs,message", [
    (dict(local_steps=0), "local_steps must be an integer >= 1, got 0"),
    (dict(local_steps=2.5), "local_steps must be an integer >= 1, got 2.5 (float)"),
    (dict(local_steps=True), "local_steps must be an integer >= 1, got True (bool)"),
    (dict(local_rounds="3"), "local_rounds must be an integer >= 1, got '3' (str)"),
    (dict(local_rounds=-2), "local_rounds must be an integer >= 1, got -2"),
    (dict(warmup_steps=-1), "warmup_steps must be an integer >= 0, got -1"),
    (dict(group_size=0), "group_size must be an integer >= 1 or 'local', got 0"),
    (dict(group_size="node"), "group_size must be an integer >= 1 or 'local', got 'node'"),
    (dict(group_size=2.0), "group_size must be an integer >= 1 or 'local', got 2.0"),
    (dict(op=hvd.Adasum), "op=hvd.Adasum is not supported by hvd_hier.DistributedOptimizer "
                          "(Adasum combines gradients, Hier-AVG averages models); use "
                          "op=hvd.Average or hvd.Sum"),
    (dict(op="mean"), "op must be hvd.Average or hvd.Sum, got 'mean'"),
    (dict(backward_passes_per_step=0), "backward_passes_per_step must be an integer >= 1, got 0"),
    (dict(gradient_predivide_factor=0.0), "gradient_predivide_factor must be a number > 0, got 0.0"),
    (dict(gradient_predivide_factor=2.0, op=hvd.Sum), "gradient_predivide_factor=2.0 needs op=hvd.Average"),
    (dict(num_groups=-1), "num_groups must be an integer >= 0, got -1"),
    (dict(bucket_cap_mb=0), "bucket_cap_mb must be a number > 0, got 0"),
    (dict(bucket_cap_mb=float("nan")), "bucket_cap_mb must be a number > 0, got nan"),
    (dict(bucket_cap_mb=True), "bucket_cap_mb must be a number > 0, got True"),
    (dict(flat_storage="yes"), "flat_storage must be True or False, got 'yes'"),
    (dict(nonfinite="maybe"), "nonfinite must be 'raise' or 'skip', got 'maybe'"),
    (dict(stall_timeout_s=0), "stall_timeout_s must be a number > 0 or None, got 0"),
    (dict(stall_timeout_s="1"), "stall_timeout_s must be a number > 0 or None, got '1'"),
    (dict(stall_timeout_s=float("inf")), "stall_timeout_s must be a number > 0 or None, got inf"),
    (dict(deterministic=1), "deterministic must be True or False, got 1"),
    (dict(deterministic=True, compression=hvd.Compression.fp16),
     "deterministic=True reduces warmup gradients without compression, got "
     "compression=FP16Compressor; pass compression=hvd.Compression.none"),
    # levels=
    (dict(levels=[(2, 2), (3, "all")]), "the period of levels[1] (3) is not a multiple of the period of "
                                        "levels[0] (2); each level's period must be a multiple of the one below"),
    (dict(levels=[(1, 2), (2, 4)], local_steps=2), "pass either levels= or local_steps, not both: "
                                                  "levels=[(K1, S), (K1 * K2, 'all')] is the two-level form"),
    (dict(levels=[(1, 2), (2, "local")]), "levels[1], the outermost level, must span the whole process set "
                                          "(group_size 'all' or its size), got 'local'"),
    (dict(levels=[Level(1, 2, codec="int8"), (2, "all")]),
     "levels[0]: unknown Level option 'codec' (= 'int8'); the known options are: compression, "
     "error_feedback, fragments, outer, overlap_steps"),
    (dict(overlap_steps=16), "overlap_steps=16 must be smaller than local_steps * local_rounds = "
                             "16: the overlapped reduction ends D steps after it starts, before "
                             "the level's next one"),
    (dict(overlap_steps=-1), "overlap_steps must be an integer >= 0 (steps the reduction runs "
                             "behind), got -1"),
    (dict(overlap_steps=1.5), "overlap_steps must be an integer >= 0 (steps the reduction runs "
                              "behind), got 1.5"),
    (dict(overlap_steps=True), "overlap_steps must be an integer >= 0 (steps the reduction runs "
                               "behind), got True"),
    (dict(levels=[(2, 2), Level(4, "all", overlap_steps=4)]),
     "levels[1]: overlap_steps=4 must be smaller than the level's period 4: the overlapped "
     "reduction ends D steps after it starts, before the level's next one"),
    (dict(levels=[(2, 2), (4, "all")], overlap_steps=1),
     "overlap_steps= belongs to the two-level form; with levels=, give the level its option: "
     "Level(period, group_size, overlap_steps=...)"),
    (dict(levels=[(1, 2), (2, "all")], global_compression="bf16"),
     "global_compression= belongs to the two-level form; with levels=, give the level its "
     "option: Level(period, group_size, compression=...)"),
    (dict(global_compression="int3"), "global_compression must be one of fp16, bf16, int8, int4, int2, a TopK (or "
                                      "None), got 'int3'"),
    (dict(levels=[(1, 2), (2, "all")], outer=print), "outer= belongs to the two-level form; with "
                                                    "levels=, give the level its option: "
                                                    "Level(period, group_size, outer=...)"),
    (dict(outer="sgd"), "outer must be a callable that returns a torch.optim.Optimizer over the "
                        "tensors it is given (e.g. functools.partial(torch.optim.SGD, lr=0.7, "
                        "momentum=0.9, nesterov=True)), got 'sgd'"),
    (dict(levels=[(1, [[0, 1], [2, 3]]), (2, "all")], elastic=True),
     "levels[0]: explicit rank lists cannot follow an elastic job's changing ranks; use an integer "
     "group_size, 'local' or 'all'"),
])
def test_bad_arguments_name_the_argument_and_the_value(kwargs, message):
    with pytest.raises(ValueError) as info:
        make_config(**kwargs)
    assert str(info.value) == message


def test_defaults_and_the_two_forms():
    c = make_config()
    assert [lv.describe() for lv in c.levels] == [(4, "local", ()), (16, "all", ())]
    assert c.shorthand and c.schedule.periods == (4, 16) and c.op is hvd.Average
    assert c.bucket_cap_bytes == 25 * 2**20
    assert c.agreement()["local_steps"] == 4 and "levels" not in c.agreement()
    assert c.schedule_config() == {"local_steps": 4, "local_rounds": 4, "warmup_steps": 0,
                                   "group_size": "local"}
    n = make_config(levels=[(2, 2), (8, "all")], warmup_steps=3)
    assert not n.shorthand and n.schedule.periods == (2, 8)
    assert n.schedule_config() == {"levels": [(2, 2, ()), (8, "all", ())], "warmup_steps": 3}
    assert n.agreement()["levels"] == [(2, 2, ()), (8, "all", ())]


def test_pointless_and_deprecated_settings_warn():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_config(local_steps=1, local_rounds=1)
        make_config(levels=[(1, "all")])
        assert make_config(num_groups=2).groups == 2
    texts = [str(w.message) for w in caught]
    assert texts[0].startswith("hvd_hier.DistributedOptimizer with local_steps=1 and local_rounds=1 "
                               "averages the model after every step: that is synchronous SGD")
    assert texts[1].startswith("hvd_hier.DistributedOptimizer with an outermost level of period 1 ")
    assert texts[2] == "num_groups is deprecated in Horovod; use groups"


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)


def test_tensors_are_collected_in_order_with_their_labels():
    m = Net()
    bn = torch.nn.BatchNorm1d(3)
    found = collect_tensors(torch.optim.SGD(m.parameters(), lr=0.1), m.named_parameters(),
                            bn.buffers())
    assert found.labels == ["'fc.weight'", "'fc.bias'", "buffer 0", "buffer 1"]  # not num_batches_tracked
    assert found.all[0] is m.fc.weight and found.all[2] is bn.running_mean


def test_tensor_errors():
    m = Net()

    def expect(exc, message, *args, **kwargs):
        with pytest.raises(exc) as info:
            collect_tensors(*args, **kwargs)
        assert str(info.value) == message

    expect(TypeError, "hvd_hier.DistributedOptimizer: optimizer must be a torch.optim.Optimizer, got Net", m)
    ints = torch.nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)
    expect(ValueError, "hvd_hier.DistributedOptimizer: param_groups[0]['params'][0] has dtype torch.int64; "
           "averaging supports float32, float64, float16 and bfloat16", torch.optim.SGD([ints], lr=0.1))
    gappy = torch.nn.Parameter(torch.zeros(4, 4)[:, ::2])
    expect(ValueError, "hvd_hier.DistributedOptimizer: 'w': a tensor of shape (4, 2) and strides (4, 2) is "
           "neither contiguous nor dense; hvd_hier averages dense tensors only",
           torch.optim.SGD([gappy], lr=0.1), [("w", gappy)])
    on_meta = torch.nn.Parameter(torch.zeros(2, device="meta"))
    expect(ValueError, "hvd_hier.DistributedOptimizer: parameters and buffers must be on one device, got "
           "'fc.weight' on cpu, 'x' on meta", torch.optim.SGD(list(m.parameters()) + [on_meta], lr=0.1),
           list(m.named_parameters()) + [("x", on_meta)])
    expect(TypeError, "buffers must be an iterable of tensors, such as model.buffers()",
           torch.optim.SGD(m.parameters(), lr=0.1), buffers=torch.zeros(3))
    tied = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 4), "head": torch.nn.Linear(4, 5)})
    tied["head"].weight = tied["emb"].weight
    expect(ValueError, "hvd_hier.DistributedOptimizer: flat_storage=True: 'emb.weight' and buffer 0 share "
           "memory (tied weights); flat storage would untie them, so pass flat_storage=False",
           torch.optim.SGD(tied.parameters(), lr=0.1), list(tied.named_parameters()),
           [tied["emb"].weight.detach()], flat_storage=True)
