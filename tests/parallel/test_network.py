"""The simulated cluster (network namespaces, shaped links) and the network benchmark's smoke run.

These need root, as CI has: without it they skip with the reason. As root, a failure to build
the namespaces is a failure, not a skip. Every test has a hard timeout and leaves no
namespace behind (the prefix ``hvdt`` keeps them apart from a benchmark's ``hvdh``).
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "benchmarks" / "cluster"
sys.path.insert(0, str(CLUSTER))

from harness import rank_python  # noqa: E402
from netns import Cluster  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the simulated cluster needs root (network namespaces); "
                              "CI runs as root")
PREFIX = "hvdt"


def namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return sorted(line.split()[0] for line in out.stdout.splitlines()
                  if line.startswith(PREFIX + "-"))


@pytest.fixture(autouse=True)
def no_leftovers():
    Cluster.remove_stale(PREFIX)
    yield
    left = namespaces()
    Cluster.remove_stale(PREFIX)
    assert not left, f"namespaces left behind: {left}"


@pytest.mark.timeout(120)
def test_cluster_shapes_the_link_and_counts_its_bytes():
    with Cluster(2, "100mbit", prefix=PREFIX) as c:
        assert namespaces() == ["hvdt-n0", "hvdt-n1", "hvdt-sw"]
        # each node is a host of its own: its name resolves to its own address
        out = c.run(1, ["sh", "-c", "hostname; getent hosts $(hostname)"], capture_output=True,
                    text=True, check=True).stdout.split()
        assert out[:2] == ["hvdt-n1", "10.213.0.2"], out
        before = c.counters()
        bw = c.throughput(0, 1, 4 << 20)
        after = c.counters()
        # tbf at 100 Mbit/s = 12.5 MB/s: one stream gets most of it and never more
        assert 8e6 < bw < 13e6, bw
        sent = after[0]["tx_bytes"] - before[0]["tx_bytes"]
        assert 4 << 20 < sent < 1.1 * (4 << 20), sent  # payload plus TCP/IP headers
        c.set_rate("1gbit")
        assert c.throughput(0, 1, 16 << 20) > 3 * bw
    assert namespaces() == []


@pytest.mark.timeout(60)
def test_cluster_is_removed_on_error_and_stale_ones_are_replaced():
    with pytest.raises(RuntimeError, match="boom"):
        with Cluster(2, "1gbit", prefix=PREFIX):
            raise RuntimeError("boom")
    assert namespaces() == []
    # a run killed outright leaves its namespaces: the next one starts clean
    subprocess.run(["ip", "netns", "add", "hvdt-n0"], check=True)
    with Cluster(2, "1gbit", prefix=PREFIX) as c:
        assert namespaces() == ["hvdt-n0", "hvdt-n1", "hvdt-sw"]
        assert c.counters()[0]["tx_bytes"] < 10_000  # a new interface, not the old namespace


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cluster_is_removed_on_ctrl_c_and_sigterm(sig):
    script = (f"import sys, time; sys.path.insert(0, {str(CLUSTER)!r})\n"
              "from netns import Cluster, raise_on_signals\n"
              "raise_on_signals()\n"
              f"with Cluster(2, '1gbit', prefix={PREFIX!r}):\n"
              "    print('up', flush=True); time.sleep(60)\n")
    # started with SIGINT ignored, as every job started with & from a script is (a CI runner,
    # say): the clean-up must not depend on how the process was started
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert proc.stdout.readline().strip() == "up"
        assert len(namespaces()) == 3
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:  # never leave it running: its late clean-up would delete the next test's cluster
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in err, err
    assert namespaces() == []


@pytest.mark.timeout(600)
def test_bench_network_smoke(tmp_path):
    """The harness end to end: every method on a tiny model across two namespaces."""
    cmd = [sys.executable, str(CLUSTER / "bench_network.py"), "--smoke", "--prefix", PREFIX,
           "--out-dir", str(tmp_path), "--python", shlex.join(rank_python())]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=540, cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    runs = {r["name"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert list(runs) == ["compute", "sync", "plan", "raw_horovod", "raw_torch", "kavg_K4",
                          "hier_1x4", "hier_1x4_bf16", "hier_1x4_int8", "hier_1x4_int8_ov3",
                          "hier_1x4_topk0.02_int2", "hier_1x4_int8_frag4", "torch_1x4"]
    planned = runs.pop("plan")  # python -m hvd_hier.plan on the cluster, given compute's t_c
    assert planned["cluster"]["p"] == 4 and planned["cluster"]["l"] == 2
    assert 0 < planned["cluster"]["b_inter"] < 1e9 and planned["cluster"]["t_local"] > 0
    assert {(p["k1"], p["k2"]) for p in planned["predictions"]} == {(1, 4), (2, 2), (4, 1)}
    for name in ("raw_horovod", "raw_torch"):  # one allreduce of the model's size, 4 times
        raw = runs.pop(name)
        assert raw["bytes"] == 4 * (192 * 46 + 46 + 46 * 10 + 10)
        assert len(raw["local_seconds"]) == len(raw["global_seconds"]) == 4  # max(4, 8 // 4)
        assert all(0 < t < 30 for t in raw["local_seconds"] + raw["global_seconds"]), raw
    assert runs["hier_1x4"]["flat_storage"] is True  # hvd_hier's fast path by default
    assert runs["hier_1x4_int8_frag4"]["flat_storage"] is False  # (fragments take none)
    for r in runs.values():
        assert (r["size"], r["ranks_per_node"], r["nodes"], r["steps"]) == (4, 2, 2, 8)
        assert r["params_bytes"] == 4 * (192 * 46 + 46 + 46 * 10 + 10)
    # K1=1, K2=4 over 8 timed steps (after one untimed period): 2 global and 6 local averagings
    for name in ("hier_1x4", "hier_1x4_bf16", "hier_1x4_int8", "hier_1x4_topk0.02_int2",
                 "torch_1x4"):
        assert (runs[name]["global_averages"], runs[name]["local_averages"]) == (2, 6), name
    # four fragments of a period of 4: one every step, after the node's averaging
    assert (runs["hier_1x4_int8_frag4"]["global_averages"],
            runs["hier_1x4_int8_frag4"]["local_averages"]) == (8, 8)
    # overlapped: the local groups average at the global steps too, before the snapshot
    assert (runs["hier_1x4_int8_ov3"]["global_averages"],
            runs["hier_1x4_int8_ov3"]["local_averages"]) == (2, 8)
    assert runs["hier_1x4_int8_ov3"]["overlap_steps"] == 3
    # the encoded bytes of one global reduction: the tiny model's 9,316 parameters in 5 records
    records = -(-(192 * 46 + 46 + 46 * 10 + 10) // 2048)
    assert runs["hier_1x4_bf16"]["global_bytes_per_average"] == records * 4096
    assert runs["hier_1x4_int8"]["global_bytes_per_average"] == records * 2064
    assert runs["hier_1x4_int8"]["compression"] == "int8"
    assert runs["hier_1x4_topk0.02_int2"]["global_bytes_per_average"] == records * 112
    # the four tensors (8,832, 46, 460 and 10 values) one per fragment: 5 + 1 + 1 + 1
    # records a period, a quarter of them per fragment's reduction on average
    assert runs["hier_1x4_int8_frag4"]["global_bytes_per_average"] == 8 * 2064 / 4
    assert runs["hier_1x4_int8_frag4"]["summary"]["peak_step_bytes"] > 0
    assert (runs["kavg_K4"]["global_averages"], runs["kavg_K4"]["local_averages"]) == (2, 0)
    # what crossed the link: at least the analytic payload, and nothing big besides
    # (top-k's 1,120 bytes are far below Horovod's own traffic: only the formula is checked;
    # the fragments' 33 kB, in 8 reductions of several small collectives each, cross)
    assert runs["hier_1x4_topk0.02_int2"]["summary"]["analytic_bytes"] == 2 * records * 112
    assert runs["hier_1x4_int8_frag4"]["summary"]["analytic_bytes"] == 2 * 8 * 2064
    assert runs["hier_1x4_int8_frag4"]["summary"]["link_ratio"] >= 1.0
    for name in ("sync", "kavg_K4", "hier_1x4", "torch_1x4"):
        s = runs[name]["summary"]
        assert s["analytic_bytes"] > 0
        assert 1.0 <= s["link_ratio"] < 4.0, (name, s)
    assert runs["compute"]["summary"]["link_bytes"] < 200_000  # Horovod's idle cycles only
    table = (tmp_path / "table.md").read_text()
    # the targets, each with its status (at 1gbit, K1=1 K2=4: what the smoke run has)
    assert ("| 1 | identical work at 1gbit, K1=1 K2=4: hvd_hier <= PyTorch's averager | "
            in table), table
    assert "| 4 | planner within 15% of every hvd_hier run at 1gbit |" in table
    for text in ("## The targets", "Horovod sync (DistributedOptimizer)",
                 "hvd_hier Hier-AVG K1=1 K2=4",
                 "## The planner's predictions", "| 1gbit | K1=1 K2=4 + int8 + overlap 3 |",
                 "hvd_hier Hier-AVG K1=1 K2=4 + int8",
                 "hvd.allreduce_ (Horovod's engine)",
                 "PyTorch HierarchicalModelAverager K1=1 K2=4", "real cluster"):
        assert text in table
    png = (tmp_path / "step_time_vs_bandwidth.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert time.monotonic() - start < 540
