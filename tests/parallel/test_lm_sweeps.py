"""The language-model comparisons end to end, as smoke runs: the corpus, the GPT and every
method for a few steps on 4 ranks (two "nodes" of 2, PyTorch's averager under torchrun),
then the table, the targets and the plots; a second call reuses every run. On one host, and
(as root) on the simulated cluster. They assert the pipelines and the schedule's counts, not
the losses."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from harness import ROOT, rank_python

pytestmark = pytest.mark.parallel

# The methods of the smoke run: one for each path through the sweep (sync; PyTorch's
# averager under torchrun; K-AVG; Hier-AVG plain and with the outer optimizer; a codec with
# overlap; a gathered codec without error feedback, by its short name; fragments). The others
# differ from these only in a flag's value, which tests/unit/test_lm.py checks for every
# method, and the codecs themselves are checked against the simulation on 8 ranks.
METHODS = ["sync", "torch_S2_K11_K24", "kavg_K4", "hier_S2_K11_K24",
           "hier_S2_K11_K24_outer0.7m0.9", "hier_S2_K11_K24_outer0.7m0.9_int8_ov1",
           "hier_S2_K11_K24_outer0.7m0.9_topk0.02_int2_noef", "hier_S2_K11_K24_outer0.7m0.9_frag4"]


def test_lm_sweep_smoke(tmp_path):
    cmd = [sys.executable, str(ROOT / "examples" / "lm" / "sweep.py"), "--preset", "smoke",
           "--out-dir", str(tmp_path), "--quiet", "--only", ",".join(METHODS),
           "--python", shlex.join(rank_python())]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    runs = {m: json.loads((tmp_path / "runs" / f"{m}_seed0.json").read_text()) for m in METHODS}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
        f"{m}_seed0.json" for m in METHODS)
    # 8 steps, evaluated at 0, 4 and 8; a global reduction every 4 steps (every step for sync,
    # PyTorch's averager after steps 1 and 5), a local one at the others (overlapped: also at
    # the global steps, where the node averages before the reduction starts)
    counts = {m: (r["evals"][-1]["global_averages"], r["evals"][-1]["local_averages"])
              for m, r in runs.items()}
    assert counts == {"sync": (8, 0), "torch_S2_K11_K24": (2, 6), "kavg_K4": (2, 0),
                      "hier_S2_K11_K24": (2, 6), "hier_S2_K11_K24_outer0.7m0.9": (2, 6),
                      "hier_S2_K11_K24_outer0.7m0.9_int8_ov1": (2, 8),
                      "hier_S2_K11_K24_outer0.7m0.9_topk0.02_int2_noef": (2, 6),
                      # a quarter of the model every step, after the node's average
                      "hier_S2_K11_K24_outer0.7m0.9_frag4": (8, 8)}, counts
    for m, r in runs.items():
        assert [e["steps"] for e in r["evals"]] == [0, 4, 8], m
        assert r["evals"][0]["train_bpb"] is None and r["evals"][-1]["train_bpb"] > 0, m
        assert r["size"] == 4 and r["parameters"] == 21_984 and r["tokens_per_step"] == 256, m
        assert r["corpus"]["sha256"] == runs["sync"]["corpus"]["sha256"], m
        assert 0 < r["test_bpb"] < 9 and r["args"]["non_iid"] == "learner", m
    # the same seed: the same initial model for every method, so the same first evaluation
    first = {round(r["evals"][0]["val_bpb"], 6) for r in runs.values()}
    assert len(first) == 1, first
    # the bytes of one global reduction: float32, or the 21,984 parameters in 11 chunks of 2048
    # as int8 records of 2064 bytes, or top-k records of 16 + 41 two-byte offsets + 41 two-bit
    # codes padded to 16 = 112 bytes; fragments send the whole model once per period
    sent = {m: r["evals"][-1]["bytes_global"] for m, r in runs.items() if m.startswith("hier")}
    plain = 2 * 21_984 * 4
    assert sent == {"hier_S2_K11_K24": plain, "hier_S2_K11_K24_outer0.7m0.9": plain,
                    "hier_S2_K11_K24_outer0.7m0.9_int8_ov1": 2 * 11 * 2064,
                    "hier_S2_K11_K24_outer0.7m0.9_topk0.02_int2_noef": 2 * 11 * 112,
                    "hier_S2_K11_K24_outer0.7m0.9_frag4": plain}, sent

    table = (tmp_path / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| method | test bits/byte |") and len(rows) == 1 + len(METHODS)
    assert rows[1].startswith("| sync SGD |") and rows[2].startswith("| PyTorch averager S=2")
    # the targets of the methods run: sync against the outer optimizer at 8x, Hier-AVG
    # against K-AVG, the fragments against whole reductions; the codecs' are not measured
    targets = table.split("## Targets\n\n", 1)[1].split("\n\n")[0].splitlines()
    measured = [t.startswith(("- **met**", "- **missed**")) for t in targets]
    assert measured == [True, True, False, False, False, True, False, False], targets
    ablation = table.split("## Ablation: error feedback\n\n", 1)[1].splitlines()
    assert ablation == ["- 2-bit: no runs with and without error feedback.",
                        "- top-k 2% + 2-bit: no runs with and without error feedback."]
    for png in ("val_vs_steps.png", "val_vs_link_bytes.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("done before, skipped") == len(METHODS), again.stdout


# Those of the three time targets, and a codec with overlap (named with --only, as the
# fewer-bits runs on the cluster are)
CLUSTER_METHODS = ["sync", "torch_S2_K11_K24", "hier_S2_K11_K24",
                   "hier_S2_K11_K24_outer0.7m0.9_int8_ov1"]


def _no_cluster():
    sys.path.insert(0, str(ROOT / "benchmarks" / "cluster"))
    from netns import can_create_namespaces

    return can_create_namespaces()


@pytest.mark.skipif(os.geteuid() != 0, reason="the simulated cluster needs root (network "
                                               "namespaces); CI runs as root")
def test_lm_cluster_smoke(tmp_path):
    """The wall-clock sweep end to end on the simulated cluster: the target from a run of
    sync, two alternated rounds of each method named at 1gbit, the table, the targets and the plot;
    a second call reuses every run."""
    why = _no_cluster()
    assert why is None, why
    cmd = [sys.executable, str(ROOT / "examples" / "lm" / "sweep.py"), "--preset",
           "cluster-smoke", "--out-dir", str(tmp_path), "--quiet", "--prefix", "hvdlt",
           "--only", ",".join(CLUSTER_METHODS), "--python", shlex.join(rank_python())]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=840, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    target = json.loads((tmp_path / "target.json").read_text())
    reference = json.loads((tmp_path / "runs" / "reference_sync.json").read_text())
    # sync's validation loss at step 4 of 8
    assert target["steps"] == 4 and target["target_bpb"] == next(
        e["val_bpb"] for e in reference["evals"] if e["steps"] == 4)
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == sorted(["reference_sync.json"] + [f"1gbit_{m}_r{k}.json"
                                                      for m in CLUSTER_METHODS for k in (0, 1)])
    for m in CLUSTER_METHODS:
        run = json.loads((tmp_path / "runs" / f"1gbit_{m}_r0.json").read_text())
        last = run["evals"][-1]
        # stopped at the target or at the end; the node's uplink counted while training
        assert last["val_bpb"] <= target["target_bpb"] or last["steps"] == 8, m
        assert run["args"]["target_bpb"] == target["target_bpb"], m
        assert last["node_tx"] > 0 and run["size"] == 4 and run["local_size"] == 2, m
    sync = json.loads((tmp_path / "runs" / "1gbit_sync_r0.json").read_text())
    # the same training as the reference, which met the target at step 4; Horovod may fuse
    # the gradients of a loaded run differently, and the sums then differ in the last bits,
    # so the run may cross the target at a later evaluation (never before: at step 2 the loss
    # is far above it)
    assert 4 <= sync["steps"] <= 8 and sync["evals"][-1]["steps"] == sync["steps"], sync
    table = (tmp_path / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| method | time to target |")
    assert len(rows) == 1 + len(CLUSTER_METHODS)
    assert rows[1].startswith("| sync SGD |") and rows[1].endswith("| 2 |")
    targets = table.split("## Targets\n\n", 1)[1].splitlines()
    assert targets[0].startswith("- **not measured**: at 100mbit") and len(targets) == 3
    assert targets[1].startswith(("- **met**: at 1gbit", "- **missed**: at 1gbit"))
    assert (tmp_path / "loss_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert " round " not in again.stdout, again.stdout  # nothing ran again
