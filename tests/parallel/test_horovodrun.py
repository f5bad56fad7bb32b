"""Multi-process tests: each runs a worker under `horovodrun --gloo` with a hard timeout and
checks that every rank passed every section."""

import json
from pathlib import Path

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
        "schedule K1=2 K2=3 S=2 W=3 deterministic", "schedule K1=1 K2=4 S=2 W=2 deterministic",
        "schedule K1=2 K2=2 S=local W=1 deterministic",
        "schedule K1=2 K2=3 S=2 W=3 flat deterministic",
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


def test_checkpoints_of_an_earlier_version_resume_exactly():
    """tests/fixtures/checkpoint_v1 was written by the hvd_hier of commit ce86478, with an
    overlapped int8 reduction in flight: the resumed steps match that version's, bit for bit."""
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoint_v1"
    out = horovodrun("legacy_checkpoint.py", "check", fixture, timeout=300)
    assert_all_ranks(out, ["resumed levels", "resumed shorthand"])


def test_bad_inputs_raise_everywhere_and_nothing_hangs():
    out = horovodrun("bad_inputs.py", timeout=300)
    assert_all_ranks(out, [
        "argument errors", "type errors", "process_set membership",
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
    # epoch ends at steps 22, 44, 66, 88: 6, 4, 2, 0 steps after a global averaging
    assert [e["steps_since_global"] for e in results["epochs"]] == [6, 4, 2, 0]
    assert results["groups"] == [[0, 1], [2, 3]] and results["steps_per_epoch"] == 22


def test_example_resumes_exactly(tmp_path):
    """Stopped after epoch 2 and resumed from the checkpoints, a run ends exactly where an
    uninterrupted one does (non-IID shards, momentum, Hier-AVG mid-cycle at the stop)."""
    from harness import ROOT as root

    common = ["--dataset", "digits", "--algo", "hier", "--local-steps", "3", "--local-rounds",
              "2", "--group-size", "2", "--non-iid", "0.5", "--no-progress"]
    train = root / "examples" / "train.py"
    horovodrun(train, *common, "--epochs", "3", "--out", tmp_path / "full.json", timeout=300)
    horovodrun(train, *common, "--epochs", "2", "--save", tmp_path / "ckpt", timeout=300)
    out = horovodrun(train, *common, "--epochs", "3", "--resume", tmp_path / "ckpt", "--out",
                     tmp_path / "resumed.json", timeout=300)
    assert "epoch   1" not in out and "epoch   3" in out
    full = json.loads((tmp_path / "full.json").read_text())["epochs"]
    resumed = json.loads((tmp_path / "resumed.json").read_text())["epochs"]
    assert len(resumed) == 3 and resumed[:2] == [
        {**e, "seconds": r["seconds"]} for e, r in zip(full[:2], resumed[:2])]
    keys = ("train_loss", "test_loss", "test_accuracy", "local_averages", "global_averages",
            "bytes_local", "bytes_global", "steps_since_global")
    assert {k: resumed[2][k] for k in keys} == {k: full[2][k] for k in keys}, (resumed[2], full[2])
    assert full[1]["steps_since_global"] == 2  # 44 steps: stopped in the middle of a cycle


def test_example_trains_resnet18_on_cifar_pickles(tmp_path):
    from cifar_files import write_cifar
    from harness import ROOT as root

    write_cifar(tmp_path / "cifar-10-batches-py", per_batch=4, test=6)
    out_json = tmp_path / "cifar.json"
    out = horovodrun(root / "examples" / "train.py", "--dataset", "cifar10", "--data-dir", tmp_path,
                     "--model", "resnet18", "--algo", "hier", "--local-steps", "1",
                     "--local-rounds", "2", "--group-size", "2", "--batch-size", "2",
                     "--epochs", "1", "--flat-storage", "--out", out_json, timeout=400)
    assert "cifar10 (resnet18, 44.70 MB of parameters): 20 train / 6 test, 4 learners, 2 steps" in out
    last = json.loads(out_json.read_text())["epochs"][-1]
    assert (last["local_averages"], last["global_averages"]) == (1, 1), last
    assert 0.0 <= last["test_accuracy"] <= 1.0 and last["train_loss"] > 0


def test_compare_runs_tabulates_plots_and_resumes(tmp_path):
    import shlex
    import subprocess
    import sys

    from harness import ROOT as root, rank_python

    cmd = [sys.executable, str(root / "examples" / "compare.py"), "--preset", "demo", "--only",
           "sync,hier_S2_K12_K24", "--seeds", "2", "--np", "4", "--out-dir", str(tmp_path),
           "--quiet", "--python", shlex.join(rank_python()), "--epochs", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["hier_S2_K12_K24_seed0.json", "hier_S2_K12_K24_seed1.json",
                    "sync_seed0.json", "sync_seed1.json"]
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[0].startswith("| configuration | final test accuracy |")
    # 2 epochs of 22 steps: sync reduces every step; Hier-AVG every 8 steps globally
    assert table[2].startswith("| sync SGD |") and "| 44 | 0 |" in table[2]
    assert table[3].startswith("| Hier-AVG S=2 K1=2 K2=4 |") and "| 5 | 17 |" in table[3]
    for png in ("accuracy_vs_epochs", "accuracy_vs_global_reductions", "accuracy_vs_time",
                "loss_vs_epochs", "claim1_fewer_global_reductions", "claim2_same_global_reductions",
                "claim3_local_averaging"):
        assert (tmp_path / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    claims = (tmp_path / "claims.md").read_text()
    assert "## 1. K2 times fewer global reductions than K-AVG with K=K1, comparable accuracy\n" \
           "- not measured in this sweep: no results for kavg_K2\n" in claims, claims
    assert "- Hier-AVG S=2 K1=2 K2=4: " in claims.split("## 3.")[1], claims
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root)
    assert again.returncode == 0 and again.stdout.count("done before, skipped") == 2, again.stdout


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
        (k, m) for k in ("local", "global")
        for m in ("fused", "fused1", "flat", "flat1", "grouped", "per_tensor")}
    assert all(r["median_ms"] > 0 for r in result["rows"])
    assert [r["ratio_to_fused"] for r in result["rows"] if r["method"] == "fused"] == [1.0, 1.0]


def test_grad_scaler_overflow_skips_the_update_not_the_schedule():
    out = horovodrun("amp_skip.py", timeout=300)
    seen = passed_lines(out)
    for name in ("amp skip explicit_unscale=False", "amp skip explicit_unscale=True"):
        assert seen.get(name) == {0, 1, 2, 3}, (name, out[-3000:])


def test_nonfinite_parameters_raise_everywhere_or_are_skipped():
    out = horovodrun("nonfinite.py", timeout=300)
    seen = passed_lines(out)
    for flat in (False, True):
        for policy in ("raise", "skip"):
            name = f"nonfinite {policy} flat={flat}"
            assert seen.get(name) == {0, 1, 2, 3}, (name, out[-3000:])


def test_exact_resume_after_a_restart_from_any_step(tmp_path):
    """Two jobs: the first trains and checkpoints after steps 2, 7 and 11; the second
    resumes from each and ends bit for bit where the first did."""
    out = horovodrun("resume_job.py", "full", tmp_path, timeout=300)
    assert passed_lines(out).get("full run") == {0, 1, 2, 3}, out[-3000:]
    out = horovodrun("resume_job.py", "resume", tmp_path, timeout=300)
    seen = passed_lines(out)
    for name in ("exact resume after step 2", "exact resume after step 7",
                 "exact resume after step 11", "checkpoint errors"):
        assert seen.get(name) == {0, 1, 2, 3}, (name, out[-3000:])


def test_a_rank_that_stops_stepping_is_reported_not_hung(tmp_path):
    out = horovodrun("stall.py", tmp_path, timeout=150)
    assert passed_lines(out).get("stall: reported") == {0, 1, 2, 3}, out[-3000:]
    assert passed_lines(out).get("stall: overlapped") == {0, 1}, out[-3000:]


def test_soak_memory_flat_nothing_leaks_counters_add_up():
    """A short soak (make soak runs 20,000 steps)."""
    out = horovodrun("soak.py", 3000, timeout=400)
    assert passed_lines(out).get("soak 3000 steps") == {0, 1, 2, 3}, out[-3000:]


def test_the_planner_measures_the_job_and_recommends_a_setting():
    """python -m hvd_hier.plan on 2 host names x 2 ranks: the measured figures, a table of
    predicted step times and one recommendation, from a given compute time and from a timed
    step of a model."""
    out = horovodrun("plan_cli.py", "--model-mb", 2, "--compute-ms", 20, "--periods", "4,8",
                     "--repeats", 2, "--rows", 100, np=4, hosts="localhost:2,127.0.0.1:2",
                     timeout=120)
    assert "4 ranks, 2 per node; model 2.0 MB; computation 20.0 ms per step" in out, out[-3000:]
    assert out.count("**(recommended)**") == 1, out[-3000:]
    assert "Recommended: hvd_hier.DistributedOptimizer(..., local_steps=" in out, out[-3000:]
    rows = [line for line in out.splitlines() if line.startswith("[0]<stdout>:| K1=")]
    assert len(rows) == 2 * 3 * 3 * 2, rows  # periods 4, 8; K1 1, 2, 4; 3 codecs; overlap
    params = 64 * 256 + 256 + 256 * 10 + 10
    out = horovodrun("plan_cli.py", "--step", "plan_cli:tiny", "--periods", "8", "--repeats", 2,
                     np=4, hosts="localhost:2,127.0.0.1:2", timeout=120)
    assert f"model {4 * params / 1e6:.1f} MB" in out and "Recommended:" in out, out[-3000:]
    # the gathered codecs and fragments: each codec's reduction measured, every setting
    # predicted (K2 = 8 and 4 take 4 fragments, K2 = 2 does not)
    out = horovodrun("plan_cli.py", "--model-mb", 2, "--compute-ms", 20, "--periods", "8",
                     "--codecs", "none,int2,topk0.02_int2", "--fragments", "1,4", "--repeats", 2,
                     "--rows", 100, np=4, hosts="localhost:2,127.0.0.1:2", timeout=120)
    assert "a global reduction with int2" in out and \
        "a global reduction with topk0.02_int2" in out, out[-3000:]
    rows = [line for line in out.splitlines() if line.startswith("[0]<stdout>:| K1=")]
    assert len(rows) == 3 * (4 + 4 + 2), rows
    assert sum("4 fragments" in r for r in rows) == 3 * (2 + 2), rows
