"""Multi-process tests: each runs a worker under `horovodrun --gloo` with a hard timeout and
checks that every rank passed every section."""

import json

import pytest

from harness import horovodrun, passed_lines

pytestmark = pytest.mark.parallel


def assert_all_ranks(out, sections, np=4):
    seen = passed_lines(out)
    for name in sections:
        assert seen.get(name) == set(range(np)), f"section {name!r} passed on {seen.get(name)}:\n{out[-4000:]}"


def test_parameters_follow_the_schedule_exactly():
    out = horovodrun("schedule_values.py", timeout=300)
    assert_all_ranks(out, [
        "schedule K1=1 K2=1 S=4 W=0", "schedule K1=2 K2=2 S=2 W=0", "schedule K1=2 K2=3 S=2 W=3",
        "schedule K1=3 K2=2 S=1 W=0", "schedule K1=2 K2=2 S=4 W=0", "schedule K1=1 K2=4 S=2 W=2",
        "schedule K1=4 K2=1 S=2 W=1", "schedule K1=2 K2=2 S=local W=1",
        "schedule K1=2 K2=2 S=2 W=0 flat", "schedule K1=2 K2=3 S=2 W=3 flat",
        "schedule K1=3 K2=2 S=1 W=0 flat", "schedule K1=1 K2=4 S=2 W=2 flat",
        "buffers averaged, integer buffers and optimizer state local"])


def test_special_cases_match_references():
    out = horovodrun("equivalence.py", timeout=300)
    assert_all_ranks(out, [
        "Horovod's arguments work in warmup", "K1=K2=1 is synchronous SGD",
        "synchronize and skip_synchronize in warmup",
        "synchronize is harmless after warmup", "S=1 is K-AVG with K=K1*K2", "S=P is K-AVG with K=K1"])


def test_state_dict_resume():
    out = horovodrun("checkpoint.py", timeout=300)
    assert_all_ranks(out, [
        "resume at step 1, every rank loads its own checkpoint",
        "resume at step 7, every rank loads its own checkpoint",
        "resume at step 10, every rank loads its own checkpoint",
        "rank 0 loads, the schedule follows on every rank", "plain state dicts",
        "flat storage: same run, state dicts, resume"])


def test_bad_inputs_raise_everywhere_and_nothing_hangs():
    out = horovodrun("bad_inputs.py", timeout=300)
    assert_all_ranks(out, [
        "argument errors", "type errors", "tensor errors", "process_set membership",
        "rank disagreement", "sparse gradients", "still in step"])


def test_local_groups_follow_hosts():
    out = horovodrun("hosts.py", hosts="localhost:2,127.0.0.1:2")
    assert_all_ranks(out, ["groups follow hosts"])


def test_local_groups_need_even_hosts():
    out = horovodrun("hosts.py", "uneven", hosts="localhost:3,127.0.0.1:1")
    assert_all_ranks(out, ["uneven hosts"])


def test_without_dynamic_process_sets_the_error_says_what_to_do():
    out = horovodrun("init_order.py", env={"HOROVOD_DYNAMIC_PROCESS_SETS": "0"})
    assert_all_ranks(out, ["dynamic process sets off"])


def test_example_trains_on_digits(tmp_path):
    out_json = tmp_path / "results.json"
    from harness import ROOT as root
    out = horovodrun(root / "examples" / "train.py", "--dataset", "digits", "--algo", "hier",
                     "--local-steps", "2", "--local-rounds", "4", "--group-size", "2",
                     "--epochs", "4", "--out", out_json, timeout=300)
    results = json.loads(out_json.read_text())
    last = results["epochs"][-1]
    assert "epoch   4" in out
    assert last["test_accuracy"] > 0.85, results
    # 22 steps per epoch, 88 steps: 88 // 2 = 44 averagings, 88 // 8 = 11 of them global
    assert (last["local_averages"], last["global_averages"]) == (33, 11), last


def test_bucketed_averaging_equals_one_bucket():
    out = horovodrun("buckets.py")
    assert_all_ranks(out, ["bucketed equals unbucketed", "flat storage equals packing"])


def test_end_to_end_benchmark_runs(tmp_path):
    from harness import ROOT

    out_json = tmp_path / "e2e.json"
    horovodrun(ROOT / "benchmarks" / "bench_e2e.py", "--model", "transformer_block",
               "--repeats", "1", "--json", out_json, timeout=300)
    result = json.loads(out_json.read_text())
    assert {(r["averaging"], r["method"]) for r in result["rows"]} == {
        (k, m) for k in ("local", "global") for m in ("fused", "flat", "grouped", "per_tensor")}
    assert all(r["median_ms"] > 0 for r in result["rows"])
    assert [r["ratio_to_fused"] for r in result["rows"] if r["method"] == "fused"] == [1.0, 1.0]
