"""The network benchmark's pure parts: rates, the rank environment, the analytic link bytes and
the cost model (no namespaces, no processes)."""

import sys
from pathlib import Path

import pytest

CLUSTER = Path(__file__).resolve().parents[2] / "benchmarks" / "cluster"
sys.path.insert(0, str(CLUSTER))

import bench_network  # noqa: E402
import costmodel  # noqa: E402
from launch import rank_env  # noqa: E402
from netns import Cluster, parse_rate  # noqa: E402


def test_parse_rate():
    assert parse_rate("100mbit") == 100_000_000
    assert parse_rate("1gbit") == 10**9
    assert parse_rate("2.5Gbit") == 2_500_000_000
    assert parse_rate("500kbit") == 500_000
    assert parse_rate("unlimited") is None
    with pytest.raises(ValueError, match=r"rate must look like 100mbit, 1gbit, 500kbit or "
                                         r"'unlimited', got '100mb'"):
        parse_rate("100mb")
    with pytest.raises(ValueError, match=r"rate must be at least 100kbit, got '50kbit'"):
        parse_rate("50kbit")


def test_cluster_arguments_are_checked_before_anything_is_created():
    with pytest.raises(ValueError, match=r"nodes must be an integer in \[2, 200\], got 1"):
        Cluster(nodes=1)
    with pytest.raises(ValueError, match=r"prefix must be 1-8 lowercase letters or digits, "
                                         r"got 'Bad-Name'"):
        Cluster(prefix="Bad-Name")
    with pytest.raises(ValueError, match=r"subnet must be the first three octets"):
        Cluster(subnet="10.0.0.0/24")
    with pytest.raises(ValueError, match=r"got 'fast'"):
        Cluster(rate="fast")
    c = Cluster(nodes=3, prefix="abc", subnet="10.9.8")
    assert c.namespaces() == ["abc-n0", "abc-n1", "abc-n2", "abc-sw"]
    assert [c.address(i) for i in range(3)] == ["10.9.8.1", "10.9.8.2", "10.9.8.3"]
    assert c.iface(2) == "hv2"


def test_rank_env_is_what_horovodrun_gives_each_slot():
    c = Cluster(nodes=2, prefix="abc")
    env = rank_env(c, 3, 4, "horovod", 12345)  # rank 4 of 6: node 1, local rank 1
    assert env == {
        "HVDH_NODE": "1", "HVDH_IFACE": "hv1", "PYTHONUNBUFFERED": "1",
        "HOROVOD_RANK": "4", "HOROVOD_SIZE": "6", "HOROVOD_LOCAL_RANK": "1",
        "HOROVOD_LOCAL_SIZE": "3", "HOROVOD_CROSS_RANK": "1", "HOROVOD_CROSS_SIZE": "2",
        "HOROVOD_HOSTNAME": "abc-n1", "HOROVOD_GLOO_RENDEZVOUS_ADDR": "10.213.0.1",
        "HOROVOD_GLOO_RENDEZVOUS_PORT": "12345", "HOROVOD_GLOO_IFACE": "hv1",
        "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo"}
    env = rank_env(c, 3, 2, "torch", 29500)
    assert {k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE",
                                "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GLOO_SOCKET_IFNAME")} == {
        "MASTER_ADDR": "10.213.0.1", "MASTER_PORT": "29500", "RANK": "2", "WORLD_SIZE": "6",
        "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "3", "GLOO_SOCKET_IFNAME": "hv0"}
    with pytest.raises(ValueError, match=r"backend must be one of \('horovod', 'torch'\), "
                                         r"got 'mpi'"):
        rank_env(c, 3, 0, "mpi", 1)


def test_runs_for_orders_and_deduplicates():
    runs = bench_network.runs_for([(1, 8), (4, 2), (2, 4)], {"compute", "sync", "kavg", "hier"})
    assert [r[0] for r in runs] == ["compute", "sync", "kavg_K8", "hier_1x8", "hier_4x2",
                                    "hier_2x4"]
    assert runs[3] == ("hier_1x8", "hier", 1, 8, None, 0)
    runs = bench_network.runs_for([(1, 8)], {"hier", "hier_int8", "hier_bf16", "torch",
                                             "hier_overlap", "hier_int8_overlap"})
    assert [r[0] for r in runs] == ["hier_1x8", "hier_1x8_bf16", "hier_1x8_int8",
                                    "hier_1x8_ov7", "hier_1x8_int8_ov7", "torch_1x8"]
    assert runs[2] == ("hier_1x8_int8", "hier", 1, 8, "int8", 0)
    assert runs[4] == ("hier_1x8_int8_ov7", "hier", 1, 8, "int8", 7)
    assert bench_network.runs_for([(1, 1)], {"hier_overlap"}) == []  # nothing to overlap
    assert bench_network.label("hier_1x8_int8") == "hvd_hier Hier-AVG K1=1 K2=8 + int8"
    assert bench_network.label("hier_1x8_int8_ov7") == \
        "hvd_hier Hier-AVG K1=1 K2=8 + int8 + overlap 7"
    assert bench_network.label("torch_1x8") == "PyTorch HierarchicalModelAverager K1=1 K2=8"
    assert bench_network.label("kavg_K8") == "hvd_hier K-AVG K=8"


def test_analytic_link_bytes():
    base = {"size": 4, "steps": 32, "params_bytes": 1000, "payload_bytes": 1200}
    # a ring of 4 sends 2*3/4 = 1.5 payloads over each edge; one edge leaves each node
    assert bench_network.analytic_link_bytes({**base, "method": "sync"}) == 1.5 * 1000 * 32
    # hvd_hier's Hier-AVG reduces in two stages through the node: 2(N-1)/N = 1 payload
    assert bench_network.analytic_link_bytes(
        {**base, "method": "hier", "k2": 8, "ranks_per_node": 2, "global_averages": 4}) == \
        1.0 * 1200 * 4
    # K-AVG (groups of one) in one stage
    assert bench_network.analytic_link_bytes(
        {**base, "method": "kavg", "k2": 8, "ranks_per_node": 2, "global_averages": 4}) == \
        1.5 * 1200 * 4
    assert bench_network.analytic_link_bytes(
        {**base, "method": "torch", "ranks_per_node": 2, "global_averages": 4}) == 1.5 * 1000 * 4
    assert bench_network.analytic_link_bytes({**base, "method": "compute"}) == 0.0
    # compressed in two stages: an alltoall and an allgather over the 2 nodes, E each way
    compressed = {**base, "method": "hier", "k2": 8, "global_averages": 4, "ranks_per_node": 2,
                  "compression": "int8", "encoded_bytes": 2064.0}
    assert bench_network.analytic_link_bytes(compressed) == 1.0 * 2064 * 4
    # in one stage, 2 nodes x 2 ranks: the alltoall sends 2 ranks x 2 shards of E/4 off the
    # node, the ring allgather's one outgoing edge 3 shards: 1.75 E per global reduction
    assert costmodel.global_link_bytes(0, 4, 2, 2064.0) == 1.75 * 2064
    assert costmodel.global_link_bytes(0, 64, 8, 1000.0) == (8 * 56 + 63) / 64 * 1000
    assert costmodel.global_link_bytes(300, 4, 2) == 1.5 * 300
    assert costmodel.global_link_bytes(300, 4, 2, two_stage=True) == 1.0 * 300
    assert costmodel.global_link_bytes(300, 64, 8, two_stage=True) == 2 * 7 / 8 * 300
    assert costmodel.global_link_bytes(0, 64, 8, 1000.0, two_stage=True) == 2 * 7 / 8 * 1000
    assert costmodel.global_link_bytes(300, 4, 1, two_stage=True) == 1.5 * 300  # one per node


def test_step_time_closed_form():
    st = costmodel.step_time
    # 2 nodes x 2 ranks, 45 MB at 12.5 MB/s: one global average is 1.5 * 45 / 12.5 = 5.4 s
    args = dict(size_bytes=45e6, p=4, l=2, t_compute=0.1, b_inter=12.5e6, t_local=0.2)
    assert st("compute", 1, 1, **args) == pytest.approx(0.1)
    assert st("sync", 1, 1, **args) == pytest.approx(0.1 + 5.4)
    assert st("kavg", 1, 8, **args) == pytest.approx(0.1 + 5.4 / 8)
    assert st("hier", 1, 8, **args) == pytest.approx(0.1 + 7 / 8 * 0.2 + 5.4 / 8)
    assert st("hier", 4, 2, **args) == pytest.approx(0.1 + 1 / 8 * 0.2 + 5.4 / 8)
    assert costmodel.ring(1) == 0.0 and costmodel.ring(64) == pytest.approx(126 / 64)
    # two stages: 1.0 * 45 / 12.5 = 3.6 s on the link; the node averages at the global step
    # too (8 local averagings per period) and gathers (half of one)
    two = (8 * 0.1 + 8 * 0.2 + 0.1 + 3.6) / 8
    assert st("hier", 1, 8, two_stage=True, **args) == pytest.approx(two)
    # overlapped with 7 steps: 0.7 s of the link's 3.6 s hide behind the computation
    assert st("hier", 1, 8, two_stage=True, overlap=7, **args) == pytest.approx(two - 0.7 / 8)
    # ... and all of it when the computation is longer
    slow = dict(args, t_compute=1.0)
    assert st("hier", 1, 8, two_stage=True, overlap=7, **slow) == pytest.approx(
        (8 * 1.0 + 8 * 0.2 + 0.1) / 8)


def test_fit_and_prediction_from_runs():
    runs = [
        {"method": "compute", "total_seconds": 3.2, "steps": 32, "link_throughput": 12.5e6},
        {"method": "hier", "k1": 1, "k2": 8, "seconds_local": 5.6, "local_averages": 28,
         "size": 4, "ranks_per_node": 2, "payload_bytes": 45e6, "params_bytes": 44e6},
    ]
    fit = costmodel.Fit.from_runs(runs)
    assert fit.t_compute == pytest.approx(0.1)
    assert fit.b_inter == 12.5e6
    assert fit.t_local == {"hier": pytest.approx(0.2)}
    assert costmodel.predict_step(runs[1], fit) == pytest.approx(  # in two stages
        (8 * 0.1 + 8 * 0.2 + 0.1 + 3.6) / 8)
    assert costmodel.predict_step({**runs[1], "method": "kavg"}, fit) == pytest.approx(
        0.1 + 5.4 / 8)
    # PyTorch's runs need their own measured local averaging
    assert costmodel.predict_step({**runs[1], "method": "torch"}, fit) is None
    assert costmodel.Fit.from_runs(runs[1:]) is None  # no compute-only run: no fit
    text = costmodel.real_cluster_table(runs, {})
    assert "| ResNet-50, 150 ms | 100 Gbit/s |" in text and "Hier-AVG 1x8" in text
