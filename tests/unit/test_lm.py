"""The language-model example's pure parts: the corpus, the GPT, the method flags, the
learning-rate schedule and the sweep's report (no processes)."""

import math
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
sys.path.insert(0, str(EXAMPLES / "lm"))
import corpus  # noqa: E402
import gpt  # noqa: E402
import methods  # noqa: E402
import report  # noqa: E402
import sweep  # noqa: E402
import train_lm  # noqa: E402
from compare import Config  # noqa: E402


# --- the corpus ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stdlib():
    return corpus.load()


def test_the_corpus_is_the_listed_standard_library_files(stdlib):
    paths = corpus.read_file_list()
    assert len(paths) == 356 and paths[:2] == ["__future__.py", "_aix_support.py"]
    assert stdlib.paths == tuple(paths)
    assert stdlib.contents[0] == (corpus.stdlib_dir() / "__future__.py").read_bytes()
    assert 7.0e6 < stdlib.nbytes < 8.0e6
    ok, why = stdlib.check()
    minor = "%d.%d" % sys.version_info[:2]
    release, known = corpus.KNOWN_SHA256[minor]
    if sys.version.split()[0] == release:  # the release it was recorded on
        assert ok and why == f"sha256 {known}, as recorded for Python {release}"
    else:
        assert ok == (stdlib.sha256 == known), why


def test_splits_are_by_file_and_disjoint(stdlib):
    # the hash of the path alone decides: the same on every Python
    assert [corpus.split_of(p) for p in ("json/decoder.py", "typing.py", "asyncio/tasks.py")] \
        == [corpus.split_of(p) for p in ("json/decoder.py", "typing.py", "asyncio/tasks.py")]
    by_split = {s: [p for p in stdlib.paths if corpus.split_of(p) == s] for s in corpus.SPLITS}
    assert sum(len(v) for v in by_split.values()) == 356
    assert all(by_split[s] for s in corpus.SPLITS)
    for s in corpus.SPLITS:  # each split is its files' bytes, concatenated in list order
        expected = b"".join((stdlib.root / p).read_bytes() for p in by_split[s])
        assert bytes(stdlib.split(s).numpy()) == expected
    with pytest.raises(ValueError, match=r"^split must be one of train, val, test, got 'dev'$"):
        stdlib.split("dev")


def test_split_of_is_a_hash_of_the_path():
    import hashlib

    for path in ("a.py", "email/parser.py", "xml/dom/minidom.py"):
        bucket = int(hashlib.sha256(path.encode()).hexdigest()[:8], 16) % 100
        assert corpus.split_of(path) == ("val" if bucket < 5 else "test" if bucket < 10 else "train")


def test_units_are_top_level_packages_or_modules():
    assert corpus.unit_of("xml/dom/minidom.py") == "xml"
    assert corpus.unit_of("typing.py") == "typing"


def test_balanced_shards_deal_the_largest_unit_to_the_lightest_shard():
    assert corpus.balanced_shards({"a": 5, "b": 4, "c": 3, "d": 2}, 2) == [["a", "d"], ["b", "c"]]
    assert corpus.balanced_shards({"x": 1, "y": 1, "z": 1}, 3) == [["x"], ["y"], ["z"]]
    assert corpus.balanced_shards({"big": 10, "s1": 1, "s2": 1}, 2) == [["big"], ["s1", "s2"]]
    with pytest.raises(ValueError, match=r"^cannot deal 2 units out to 3 shards"):
        corpus.balanced_shards({"a": 1, "b": 1}, 3)
    with pytest.raises(ValueError, match=r"^n \(the number of shards\) must be an integer >= 1, got 0$"):
        corpus.balanced_shards({"a": 1}, 0)


def test_shards_hold_whole_packages_and_all_of_train(stdlib):
    units = stdlib.shard_units(8)
    shards = stdlib.shards(8)
    assert sorted(u for s in units for u in s) == sorted(
        {corpus.unit_of(p) for p in stdlib.paths if corpus.split_of(p) == "train"})
    assert sum(len(s) for s in shards) == len(stdlib.split("train"))
    sizes = [len(s) for s in shards]
    assert max(sizes) < 1.05 * min(sizes)  # balanced: no package is larger than a shard
    asyncio_shard = next(i for i, s in enumerate(units) if "asyncio" in s)
    tasks = (stdlib.root / "asyncio" / "tasks.py").read_bytes()
    if corpus.split_of("asyncio/tasks.py") == "train":
        assert tasks in bytes(shards[asyncio_shard].numpy())
        assert all(tasks not in bytes(s.numpy()) for i, s in enumerate(shards) if i != asyncio_shard)


def test_a_missing_file_is_named_with_the_python_looked_in(tmp_path):
    listing = tmp_path / "files.txt"
    listing.write_text("# comment\na.py\nb/c.py\nd.py\n")
    (tmp_path / "a.py").write_bytes(b"x = 1\n")
    with pytest.raises(FileNotFoundError) as info:
        corpus.load(tmp_path, listing)
    assert str(info.value) == (f"2 of the corpus's 3 standard-library files are missing from "
                               f"{tmp_path} ({corpus.python_name()}): b/c.py, d.py")


def test_a_corpus_that_differs_is_reported(tmp_path, monkeypatch):
    listing = tmp_path / "files.txt"
    listing.write_text("a.py\n")
    (tmp_path / "a.py").write_bytes(b"x = 1\n")
    small = corpus.load(tmp_path, listing)
    minor = "%d.%d" % sys.version_info[:2]
    monkeypatch.setitem(corpus.KNOWN_SHA256, minor, ("3.99.0", "0" * 64))
    ok, why = small.check()
    assert not ok and why == (f"the corpus of {corpus.python_name()} is {small.sha256}, not the "
                              f"{'0' * 64} recorded for Python 3.99.0: the standard library's "
                              "sources differ")
    monkeypatch.delitem(corpus.KNOWN_SHA256, minor)
    assert small.check() == (False, f"no sha256 recorded for Python {minor}; this corpus "
                                    f"({corpus.python_name()}) is {small.sha256}")


def test_batches_are_windows_and_their_next_bytes():
    data = torch.arange(200, dtype=torch.uint8)
    g = torch.Generator().manual_seed(3)
    x, y = corpus.sample_batch(data, 5, 16, g)
    assert x.shape == y.shape == (5, 16) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    starts = torch.randint(0, 200 - 17, (5,), generator=torch.Generator().manual_seed(3))
    assert x[:, 0].tolist() == starts.tolist()


def test_eval_windows_are_evenly_spaced_and_fixed():
    data = torch.arange(100, dtype=torch.uint8)
    w = corpus.eval_windows(data, 4, 9)
    assert w[:, 0].tolist() == [0, 30, 60, 90] and w.shape == (4, 10)
    with pytest.raises(ValueError, match=r"^count must be >= 1, got 0$"):
        corpus.eval_windows(data, 0, 9)


# --- the GPT ------------------------------------------------------------------------------

def test_named_sizes_have_their_documented_parameter_counts():
    counts = {name: gpt.count_parameters(gpt.make_gpt(name)) for name in gpt.SIZES}
    assert counts == {"tiny": 21_984, "1m": 1_040_768, "3m": 2_743_296, "10m": 10_028_160}
    for name, n in counts.items():
        assert f"{n:,}" in gpt.__doc__, name


def test_the_output_layer_is_the_embedding_and_attention_is_causal():
    torch.manual_seed(0)
    model = gpt.make_gpt("tiny").eval()
    x = torch.randint(0, 256, (2, 12))
    logits = model(x)
    h = model.ln_f(_hidden(model, x))
    assert torch.allclose(logits, h @ model.tokens.weight.t(), atol=1e-6)
    changed = x.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 256
    assert torch.equal(model(changed)[:, :7], logits[:, :7])  # the past does not see the future
    assert not torch.allclose(model(changed)[:, 7:], logits[:, 7:])


def _hidden(model, x):
    h = model.tokens(x) + model.positions(torch.arange(x.shape[1]))
    for block in model.blocks:
        h = block(h)
    return h


def test_a_new_model_predicts_bytes_almost_uniformly():
    torch.manual_seed(0)
    model = gpt.make_gpt("1m")
    x = torch.randint(0, 256, (2, 64))
    assert model.loss(x[:, :-1], x[:, 1:]).item() == pytest.approx(math.log(256), abs=0.05)


def test_gpt_arguments_are_checked():
    with pytest.raises(ValueError, match=r"^size must be one of tiny, 1m, 3m, 10m, got '2m'$"):
        gpt.make_gpt("2m")
    with pytest.raises(ValueError, match=r"^width 30 is not a multiple of heads 4$"):
        gpt.GPTConfig(1, 30, 4, 8)
    with pytest.raises(ValueError, match=r"^layers must be an integer >= 1, got 0$"):
        gpt.GPTConfig(0, 32, 4, 8)
    with pytest.raises(ValueError, match=r"^a sequence of 33 bytes is longer than the context 32$"):
        gpt.make_gpt("tiny")(torch.zeros(1, 33, dtype=torch.long))


def test_weight_decay_spares_biases_and_norms():
    model = gpt.make_gpt("tiny")
    decay, rest = gpt.decay_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in rest["params"])
    assert len(decay["params"]) + len(rest["params"]) == len(list(model.parameters()))


# --- flags and schedule -------------------------------------------------------------------

def test_learning_rate_warms_up_then_decays_by_a_cosine():
    args = train_lm.parse_args(["--lr", "0.01", "--lr-warmup", "10", "--steps", "110",
                                "--min-lr-ratio", "0.1"])
    assert train_lm.learning_rate(args, 5) == pytest.approx(0.005)
    assert train_lm.learning_rate(args, 10) == pytest.approx(0.01)
    assert train_lm.learning_rate(args, 60) == pytest.approx(0.001 + 0.009 * 0.5)
    assert train_lm.learning_rate(args, 110) == pytest.approx(0.001)


@pytest.mark.parametrize("argv, message", [
    (["--algo", "torch", "--outer-lr", "0.7"],
     "--algo torch takes no --global-compression, --no-error-feedback, --global-fragments, "
     "--overlap-steps, --outer-lr, --flat-storage or --warmup-steps (hvd_hier's options)"),
    (["--algo", "torch", "--global-fragments", "2"],
     "--algo torch takes no --global-compression, --no-error-feedback, --global-fragments, "
     "--overlap-steps, --outer-lr, --flat-storage or --warmup-steps (hvd_hier's options)"),
    (["--global-fragments", "0"], "--global-fragments must be >= 1, got 0"),
    (["--size", "tiny", "--context", "64"], "--context must be in [2, 32] for --size tiny, got 64"),
    (["--local-steps", "0"], "--local-steps must be >= 1, got 0"),
    (["--group-size", "two"], "--group-size must be an integer or 'local', got 'two'"),
    (["--seed", "0,1", "--out", "x.json"], "with several seeds, --out must contain {seed}"),
    (["--eval-every", "0"], "--eval-every must be >= 1, got 0"),
    (["--min-lr-ratio", "2"], "--min-lr-ratio must be in [0, 1], got 2.0"),
])
def test_bad_flags_are_named(argv, message, capsys):
    with pytest.raises(SystemExit):
        train_lm.parse_args(argv)
    assert capsys.readouterr().err.strip().endswith(f"error: {message}")


def test_counters_of_the_methods_that_keep_none():
    args = train_lm.parse_args(["--algo", "sync"])
    assert methods.averaging_counters(args, None, 10, 400) == {
        "local_averages": 0, "global_averages": 10, "bytes_local": 0, "bytes_global": 4000}

    class Averaged:
        averaging_counters = {"local": 6, "global": 2}

    args = train_lm.parse_args(["--algo", "torch", "--local-steps", "1", "--local-rounds", "4"])
    assert methods.averaging_counters(args, Averaged, 8, 400) == {
        "local_averages": 6, "global_averages": 2, "bytes_local": 2400, "bytes_global": 800}
    # PyTorch's averager averages over all ranks at its first step, then every K1*K2
    assert [methods.schedule_position(args, s) for s in (1, 2, 4, 5, 6)] == [0, 1, 3, 0, 1]
    hier = train_lm.parse_args(["--algo", "hier", "--local-steps", "1", "--local-rounds", "4"])
    assert [methods.schedule_position(hier, s) for s in (1, 4, 5)] == [1, 0, 1]


def test_describe_names_every_option():
    args = train_lm.parse_args(["--algo", "hier", "--local-steps", "1", "--local-rounds", "8",
                                "--group-size", "4", "--outer-lr", "0.7",
                                "--global-compression", "int8", "--overlap-steps", "2"])
    assert methods.describe(args) == "hier K1=1 K2=8 S=4 outer lr=0.7 m=0.9 int8 overlap 2"
    more = train_lm.parse_args(["--algo", "hier", "--local-steps", "1", "--local-rounds", "8",
                                "--group-size", "4", "--global-compression", "int2",
                                "--no-error-feedback", "--global-fragments", "4"])
    assert methods.describe(more) == ("hier K1=1 K2=8 S=4 int2 without error feedback "
                                      "4 fragments")


def test_options_the_shorthand_lacks_go_through_levels():
    import hvd_hier
    plain = train_lm.parse_args(["--algo", "hier", "--local-steps", "2", "--local-rounds", "4",
                                 "--group-size", "4", "--global-compression", "int2"])
    assert methods.schedule_args(plain) == {
        "local_steps": 2, "local_rounds": 4, "group_size": 4, "global_compression": "int2",
        "outer": None, "overlap_steps": None}
    more = train_lm.parse_args(["--algo", "kavg", "--local-steps", "2", "--local-rounds", "4",
                                "--global-compression", "topk0.02_int2", "--no-error-feedback",
                                "--global-fragments", "2"])
    assert methods.schedule_args(more) == {"levels": [(2, 1), hvd_hier.Level(
        8, "all", compression=hvd_hier.TopK(0.02, values="int2"), error_feedback=False,
        fragments=2)]}


# --- the sweep's report -------------------------------------------------------------------

def _run(algo, seed, test, globals_=8, bytes_global=None, compression=None, group_size=4,
         param_bytes=1000, size=8):
    row = {"steps": 64, "val_bpb": test + 0.01, "global_averages": globals_,
           "local_averages": 0, "bytes_global": bytes_global or globals_ * param_bytes}
    return {"args": {"algo": algo, "seed": seed, "group_size": group_size,
                     "global_compression": compression},
            "size": size, "local_size": 4, "parameter_bytes": param_bytes, "test_bpb": test,
            "seconds": 10.0, "evals": [dict(row, steps=0, global_averages=0, bytes_global=0),
                                       row]}


def test_bytes_between_nodes_follow_each_methods_reduction():
    # 8 ranks, 4 per node, 1000 bytes: a ring over 8 sends 2*7/8 of them per node; Hier-AVG's
    # two stages 2*1/2 (a ring over the 2 nodes); int8 deltas of 252 bytes through an
    # alltoall (4 ranks x 4 others x 252/8) and an allgather (7 shards of 252/8)
    sync = _run("sync", 0, 2.0, globals_=64)
    assert report.link_bytes(sync, sync["evals"][-1]) == pytest.approx(64 * 1750)
    torch_run = _run("torch", 0, 2.0)
    assert report.link_bytes_per_global(torch_run, torch_run["evals"][-1]) == pytest.approx(1750)
    kavg = _run("kavg", 0, 2.0, group_size="local")
    assert report.link_bytes_per_global(kavg, kavg["evals"][-1]) == pytest.approx(1750)
    hier = _run("hier", 0, 2.0)
    assert report.link_bytes_per_global(hier, hier["evals"][-1]) == pytest.approx(1000)
    int8 = _run("hier", 0, 2.0, bytes_global=8 * 252, compression="int8")
    assert report.link_bytes_per_global(int8, int8["evals"][-1]) == pytest.approx(252)
    kavg8 = _run("kavg", 0, 2.0, bytes_global=8 * 252, compression="int8")
    assert report.link_bytes_per_global(kavg8, kavg8["evals"][-1]) == pytest.approx(
        (4 * 4 + 7) / 8 * 252)


def _results(sync, kavg, hier, outer8, int8):
    out = {}
    for name, algo, losses in (("sync", "sync", sync), ("kavg_K8", "kavg", kavg),
                               ("hier_S4_K11_K28", "hier", hier), ("outer", "hier", outer8),
                               ("int8", "hier", int8)):
        out[name] = [_run(algo, s, v, globals_=64 if algo == "sync" else 8)
                     for s, v in enumerate(losses)]
    return out


ROLES = {"sync": "sync", "kavg": "kavg_K8", "hier": "hier_S4_K11_K28", "outer8": "outer",
         "int8": "int8", "int8_base": "outer"}


def test_quality_targets_met_and_missed_with_their_figures():
    results = _results(sync=[2.0, 2.1, 2.2], kavg=[2.3, 2.3, 2.3], hier=[2.2, 2.25, 2.2],
                       outer8=[2.03, 2.13, 2.23], int8=[2.031, 2.131, 2.231])
    t = report.quality_targets(results, ROLES)
    assert [x.status() for x in t] == ["met", "met", "met"] + ["not measured"] * 5
    assert t[3].figures == "no runs of int2 or its uncompressed twin"
    assert t[5].what == ("the global level in 4 fragments ends within 1% of whole-model "
                         "reductions at the same schedule")
    assert t[6].what == "top-k 2% + 2-bit sends at least 50x fewer bytes across nodes than hier"
    assert t[0].figures.startswith("outer: +1.4") and "(64 against 8 global reductions, 8.0x fewer)" in t[0].figures
    assert t[1].figures == ("hier_S4_K11_K28 minus kavg_K8: -0.0833 ± 0.0289 bits/byte; lower on "
                            "3 of 3 seeds (8 and 8 global reductions)")
    results = _results(sync=[2.0, 2.1, 2.2], kavg=[2.3, 2.2, 2.3], hier=[2.2, 2.25, 2.2],
                       outer8=[2.1, 2.2, 2.3], int8=[2.12, 2.22, 2.32])
    t = report.quality_targets(results, ROLES)
    assert [x.status() for x in t][:3] == ["missed", "missed", "missed"]
    assert "lower on 2 of 3 seeds" in t[1].figures
    del results["kavg_K8"]
    assert report.quality_targets(results, ROLES)[1].status() == "not measured"
    section = report.targets_section(t)
    assert section.startswith("## Targets\n\n- **missed**: With an outer optimizer")


def test_the_ablation_pairs_each_codec_with_and_without_error_feedback():
    results = _results(sync=[2.0] * 3, kavg=[2.3] * 3, hier=[2.2] * 3, outer8=[2.0, 2.1, 2.2],
                       int8=[2.0] * 3)
    results["i2"] = [_run("hier", s, v) for s, v in enumerate([2.02, 2.121, 2.222])]
    results["i2n"] = [_run("hier", s, v) for s, v in enumerate([2.04, 2.142, 2.2])]
    roles = {**ROLES, "int2": "i2", "int2_noef": "i2n"}
    assert report.ablation_section(results, roles).splitlines()[2:] == [
        # without: +2%, +2%, 0%; without less with: +0.99%, +0.99%, -0.99%
        "- 2-bit: with error feedback +1.00% ± 0.00, without +1.33% ± 1.15 against "
        "uncompressed; without less with +0.33% ± 1.14, higher on 2 of 3 seeds.",
        "- top-k 2% + 2-bit: no runs with and without error feedback."]


def test_a_fragments_reduction_sends_its_share_of_the_model():
    whole = _run("hier", 0, 2.0, globals_=8, param_bytes=1000, group_size=4)
    parts = _run("hier", 0, 2.0, globals_=32, param_bytes=1000, group_size=4)
    parts["args"]["global_fragments"] = 4
    row = {"global_averages": 32, "bytes_global": 8000}
    assert report.link_bytes_per_global(parts, row) == \
        report.link_bytes_per_global(whole, {**row, "global_averages": 8}) / 4


def test_table_rows_carry_means_and_bytes():
    results = _results(sync=[2.0, 2.2], kavg=[2.3, 2.3], hier=[2.2, 2.2], outer8=[2.1, 2.1],
                       int8=[2.1, 2.1])
    lines = report.table(results, {"sync": "sync SGD"}).splitlines()
    assert lines[2] == ("| sync SGD | 2.1000 ± 0.1414 | 2.1100 ± 0.1414 | 64 | 0 | 0.1 MB | "
                        "10 ± 0 | 2 |")


def test_the_sweeps_methods_and_their_names():
    configs, roles = sweep.quality_configs(4, 8, (0.7, 0.9), 2)
    assert [c.name for c in configs] == [
        "sync", "torch_S4_K11_K28", "kavg_K8", "hier_S4_K11_K28",
        "hier_S4_K11_K24_outer0.7m0.9", "hier_S4_K11_K28_outer0.7m0.9",
        "hier_S4_K11_K28_outer0.7m0.9_int8", "hier_S4_K11_K28_outer0.7m0.9_int8_ov2",
        "hier_S4_K11_K28_outer0.7m0.9_int4", "hier_S4_K11_K28_outer0.7m0.9_int2",
        "hier_S4_K11_K28_outer0.7m0.9_topk0.02_int2", "hier_S4_K11_K28_outer0.7m0.9_int2_noef",
        "hier_S4_K11_K28_outer0.7m0.9_topk0.02_int2_noef", "hier_S4_K11_K28_outer0.7m0.9_frag4"]
    assert configs[-1].train_args()[-2:] == ["--global-fragments", "4"]
    assert configs[-2].label == ("Hier-AVG S=4 K1=1 K2=8 + outer lr=0.7 m=0.9 + topk0.02_int2 "
                                 "without error feedback")
    assert roles["int8_base"] == roles["outer8"] == "hier_S4_K11_K28_outer0.7m0.9"
    assert configs[1].train_args() == ["--algo", "torch", "--local-steps", "1",
                                       "--local-rounds", "8", "--group-size", "4"]
    assert Config("sync", lr=0.004).train_args() == ["--algo", "sync", "--lr", "0.004"]
    plan = Config("hier", 1, 8, 4, (0.7, 0.9), "int8", 2)
    assert len(sweep.quality_configs(4, 8, (0.7, 0.9), 2, plan)[0]) == 14  # already there
    # the launchers come from this interpreter; --python says how each rank starts Python
    here = sys.executable
    horovodrun = str(Path(here).parent / "horovodrun")
    torchrun = [here, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "8"]
    assert sweep.launcher(configs[1], 8, 4, [here]) == torchrun
    assert sweep.launcher(configs[1], 8, 4, ["py", "w.py"]) == [*torchrun, "--no-python",
                                                                "py", "w.py"]
    assert sweep.launcher(configs[0], 8, 4, ["py", "w.py"]) == [
        horovodrun, "-np", "8", "-H", "localhost:4,127.0.0.1:4", "--gloo", "py", "w.py"]


def test_progress_follows_rank_zeros_evaluations():
    p = sweep.Progress(64)

    class Bar:
        n = 0

        def set_postfix_str(self, s):
            self.postfix = s

        def refresh(self):
            pass

    p.bar = Bar()
    for line in ("[0]<stdout>:step     0  train    —    val 7.9000 bits/byte",
                 "[0]<stdout>:step    32  train 3.1  val 3.0000 bits/byte",
                 "[1]<stderr>:something else", "step    64  train 2.5  val 2.4000 bits/byte",
                 "step     0  train    —    val 7.9000 bits/byte",
                 "step    32  train 3.1  val 3.0500 bits/byte"):
        p.line(line)
    assert p.bar.n == 96 and p.bar.postfix == "3.0500"


def test_the_planners_recommendation_joins_the_comparison(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text('{"recommended": {"k1": 4, "k2": 4, "compression": null, "overlap": 1}}')
    plan = sweep.plan_config(str(path), 4, (0.7, 0.9))
    assert plan == Config("hier", 4, 4, 4, (0.7, 0.9), None, 1)
    configs, _ = sweep.quality_configs(4, 8, (0.7, 0.9), 2, plan)
    assert configs[-1].name == "hier_S4_K14_K24_outer0.7m0.9_ov1" and len(configs) == 15
    assert sweep.plan_config(None, 4, (0.7, 0.9)) is None


def test_the_sweep_runs_the_targets_methods_first():
    configs, roles = sweep.quality_configs(4, 8, (0.7, 0.9), 2, Config("hier", 4, 4, 4))
    assert [c.name for c in sweep.run_order(configs, roles)] == [
        "sync", "hier_S4_K11_K28_outer0.7m0.9", "hier_S4_K11_K28", "kavg_K8",
        "hier_S4_K11_K28_outer0.7m0.9_int8", "torch_S4_K11_K28", "hier_S4_K11_K24_outer0.7m0.9",
        "hier_S4_K11_K28_outer0.7m0.9_int8_ov2", "hier_S4_K11_K28_outer0.7m0.9_int2",
        "hier_S4_K11_K28_outer0.7m0.9_topk0.02_int2", "hier_S4_K11_K28_outer0.7m0.9_int4",
        "hier_S4_K11_K28_outer0.7m0.9_int2_noef", "hier_S4_K11_K28_outer0.7m0.9_topk0.02_int2_noef",
        "hier_S4_K11_K28_outer0.7m0.9_frag4", "hier_S4_K14_K24"]


def test_the_cluster_runs_the_time_targets_methods_or_those_named():
    plan = Config("hier", 4, 4, 4)
    configs, roles = sweep.quality_configs(2, 8, (0.7, 0.5), 2, plan)
    kept, candidates = sweep.cluster_methods(configs, roles, None)
    assert [c.name for c in kept] == [
        "sync", "torch_S2_K11_K28", "hier_S2_K11_K28", "hier_S2_K11_K28_outer0.7m0.5",
        "hier_S2_K11_K28_outer0.7m0.5_int8", "hier_S2_K11_K28_outer0.7m0.5_int8_ov2",
        "hier_S4_K14_K24"]
    assert candidates == [c.name for c in kept[2:]]  # every hvd_hier setting
    only = sweep.wanted(None, "sync,torch,int2,frag4", roles)
    assert only == ("sync,torch_S2_K11_K28,hier_S2_K11_K28_outer0.7m0.5_int2,"
                    "hier_S2_K11_K28_outer0.7m0.5_frag4")
    kept, candidates = sweep.cluster_methods(sweep.select(configs, only), roles, only)
    assert [c.name for c in kept] == only.split(",") and candidates == only.split(",")[2:]
    assert sweep.wanted("kavg_K8", "hier", roles) == "kavg_K8,hier_S2_K11_K28"
    assert sweep.wanted("kavg_K8", None, roles) == "kavg_K8"
    with pytest.raises(SystemExit) as info:
        sweep.wanted(None, "sync,int3", roles)
    assert str(info.value).startswith("--roles: unknown roles ['int3']; the roles are [")
    only = sweep.wanted(None, "int2,frag4", roles)  # no sync: no target, no ratio
    with pytest.raises(SystemExit) as info:
        sweep.cluster_methods(sweep.select(configs, only), roles, only)
    assert str(info.value) == (
        "the cluster presets need sync among the methods (its run gives the target and every "
        "'vs sync' ratio): add it to --roles or --only, got ['hier_S2_K11_K28_outer0.7m0.5_int2', "
        "'hier_S2_K11_K28_outer0.7m0.5_frag4']")


# --- wall-clock to a target ---------------------------------------------------------------

def test_a_run_is_started_again_only_after_a_stalled_start_or_a_gloo_timeout():
    import cluster

    assert cluster.retried("timeout after 3600 s: rank 0 ...")
    assert cluster.retried("rank 0 (node 0) exited with 1; the others were stopped. Its output:\n"
                           "RuntimeError: [gloo/transport/tcp/unbound_buffer.cc:81] Timed out "
                           "waiting 30000ms for recv operation to complete")
    assert not cluster.retried("rank 1 (node 0) exited with 1; the others were stopped. Its "
                               "output:\nValueError: levels[1]: fragments=3 must divide ...")


def test_a_failed_launchs_logs_are_kept_and_counted_across_sweeps(tmp_path):
    import cluster

    logs = tmp_path / "1gbit_hier_r1"
    assert cluster.failed_launches(logs) == 0
    for _ in range(2):  # two failed launches, the second in a later sweep
        cluster.failed_logs(logs, cluster.failed_launches(logs) + 1).mkdir()
    assert cluster.failed_launches(logs) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1gbit_hier_r1.attempt1",
                                                         "1gbit_hier_r1.attempt2"]


def _timed(algo, rnd, curve, steps=64, compression=None):
    """A cluster run: curve is [(steps, seconds, val_bpb), ...]."""
    rows = [{"steps": s, "seconds": t, "val_bpb": v, "global_averages": s // 8,
             "local_averages": 0, "bytes_global": s // 8 * 1000} for s, t, v in curve]
    return {"args": {"algo": algo, "seed": 0, "group_size": 2, "global_compression": compression,
                     "steps": steps},
            "size": 4, "local_size": 2, "parameter_bytes": 1000, "evals": rows,
            "steps": curve[-1][0], "seconds": curve[-1][1], "round": rnd}


TIME_ROLES = {"sync": "sync", "torch": "torch_S2_K11_K28", "hier": "hier_S2_K11_K28"}


def test_time_to_target_is_the_first_evaluation_at_or_below_it():
    run = _timed("hier", 0, [(0, 0.0, 8.0), (16, 4.0, 3.5), (32, 8.5, 3.0), (48, 13.0, 2.9)])
    assert report.time_to_target(run, 3.0) == 8.5 and report.steps_to_target(run, 3.0) == 32
    assert report.time_to_target(run, 2.0) is None and report.steps_to_target(run, 2.0) is None
    assert report.step_seconds(run) == pytest.approx(13.0 / 48)


def test_time_targets_pair_the_rounds_and_take_the_best_setting():
    def rounds(algo, times):
        # reaches 3.0 at step 32 in every round, at the given training time
        return [_timed(algo, k, [(0, 0.0, 8.0), (32, t, 3.0), (64, 2 * t, 2.8)])
                for k, t in enumerate(times)]

    slow = {"sync": rounds("sync", [60.0, 50.0, 70.0]),
            "torch_S2_K11_K28": rounds("torch", [12.0, 10.0, 14.0]),
            "hier_S2_K11_K28": rounds("hier", [11.0, 9.0, 12.0]),
            "int8": rounds("hier", [8.0, 7.0, 9.0])}
    fast = {"sync": rounds("sync", [20.0]), "torch_S2_K11_K28": rounds("torch", [9.0]),
            "hier_S2_K11_K28": rounds("hier", [10.0])}
    got = report.time_targets({"100mbit": slow, "1gbit": fast}, TIME_ROLES, 3.0,
                              ["hier_S2_K11_K28", "int8"])
    assert [t.status() for t in got] == ["met", "missed", "missed"]
    # int8 is best; ratios round by round: sync 7.5, 7.14, 7.78 -> 7.50; torch 1.5, 1.43, 1.56
    assert got[0].figures == (
        "int8: 8.0 s, 7.50x (median of 3 rounds, 7.14-7.78) sooner than sync (60.0 s) and "
        "1.50x (median of 3 rounds, 1.43-1.56) sooner than PyTorch's averager (12.0 s)")
    assert got[1].figures.startswith("hier_S2_K11_K28: 10.0 s, 2.00x sooner than sync")
    # identical work at 1gbit: 20 against 18 ms per step (64 steps in 2 x 10 s and 2 x 9 s)
    assert got[2].figures == "312 against 281 ms per step: 0.90x"
    none = report.time_targets({}, TIME_ROLES, 3.0, ["hier_S2_K11_K28"])
    assert [t.status() for t in none] == ["not measured"] * 3


def test_a_setting_that_misses_the_target_in_a_round_is_not_the_best():
    never = _timed("hier", 0, [(0, 0.0, 8.0), (64, 5.0, 3.5)])
    ok = _timed("hier", 0, [(0, 0.0, 8.0), (32, 9.0, 3.0)])
    sync = _timed("sync", 0, [(0, 0.0, 8.0), (32, 90.0, 3.0)])
    torch_run = _timed("torch", 0, [(0, 0.0, 8.0), (32, 18.0, 3.0)])
    got = report.time_targets({"100mbit": {"sync": [sync], "torch_S2_K11_K28": [torch_run],
                                           "fast": [never], "slow": [ok]}},
                              TIME_ROLES, 3.0, ["fast", "slow"])
    assert got[0].status() == "met" and got[0].figures.startswith("slow: 9.0 s, 10.00x")
