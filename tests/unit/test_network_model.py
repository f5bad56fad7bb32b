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
    assert runs[3] == ("hier_1x8", "hier", 1, 8, None, 0, 1)
    runs = bench_network.runs_for([(1, 8)], {"hier", "hier_int8", "hier_bf16", "torch",
                                             "hier_overlap", "hier_int8_overlap"})
    assert [r[0] for r in runs] == ["hier_1x8", "hier_1x8_bf16", "hier_1x8_int8",
                                    "hier_1x8_ov7", "hier_1x8_int8_ov7", "torch_1x8"]
    assert runs[2] == ("hier_1x8_int8", "hier", 1, 8, "int8", 0, 1)
    assert runs[4] == ("hier_1x8_int8_ov7", "hier", 1, 8, "int8", 7, 1)
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
    # the slowest rank's averagings (the least waiting) where the run has them
    timed = {**runs[1], "steps": 16, "total_seconds": 8.0, "seconds_global": 3.0,
             "seconds_local_min": 2.4, "seconds_global_min": 2.0}
    assert costmodel.averaging_seconds(timed, "local") == 2.4
    assert costmodel.averaging_seconds(runs[1], "local") == 5.6
    assert costmodel.run_compute(timed) == pytest.approx((8.0 - 2.4 - 2.0) / 16)
    assert costmodel.run_compute({**timed, "method": "sync"}) is None
    # an overlapped run's local averagings are not the fit's; the planner's figures are
    overlapped = {**runs[1], "seconds_local": 50.0, "overlap_steps": 7}
    planned = {"method": "plan", "cluster": {"latency": 0.01, "t_codec": {"int8": 0.1},
                                             "t_global": {"int8": 1.5}}}
    fit = costmodel.Fit.from_runs(runs + [overlapped, planned])
    assert fit.t_local == {"hier": pytest.approx(0.2)}
    assert (fit.latency, fit.t_codec, fit.t_global) == (0.01, {"int8": 0.1}, {"int8": 1.5})
    coded = {**runs[1], "compression": "int8", "encoded_bytes": 11.3e6}
    assert costmodel.predict_step(coded, fit) == pytest.approx((8 * 0.1 + 8 * 0.2 + 1.5) / 8)
    # overlapped: 1.4 s outside the kernels in 6 collectives, busy at 7 boundaries
    assert costmodel.predict_step({**coded, "overlap_steps": 7}, fit) == pytest.approx(
        (8 * 0.1 + 8 * 0.2 + 1.5 - (1.4 - 7 * 1.4 / 12)) / 8)
    assert costmodel.predict_step(runs[1], fit) == pytest.approx(
        (8 * 0.1 + 8 * 0.2 + 0.1 + 0.01 + 3.6) / 8)  # uncompressed: the latency adds
    text = costmodel.real_cluster_table(runs, {})
    assert "| ResNet-50, 150 ms | 100 Gbit/s |" in text and "Hier-AVG 1x8" in text


def _run(name, method, rate, mean, k1=1, k2=8, **extra):
    bits = {"100mbit": 10**8, "1gbit": 10**9}[rate]
    return {"name": name, "method": method, "rate": rate, "rate_bits": bits, "k1": k1, "k2": k2,
            "steps": 16, "summary": {"mean_step": mean}, **extra}


def test_targets_are_checked_on_the_runs():
    import targets

    hier = dict(seconds_local=2.8, local_averages=14, seconds_global=8.0, global_averages=2)
    runs = [
        _run("compute", "compute", "100mbit", 0.2, step_seconds=[0.1, 0.2, 0.3]),
        _run("sync", "sync", "100mbit", 6.0),
        _run("hier_1x8", "hier", "100mbit", 0.85, **hier),
        _run("hier_1x8_int8", "hier", "100mbit", 0.57, compression="int8",
             **dict(hier, seconds_global=6.4)),
        # its own computation (7.36 s less 4.16 s of averagings) / 16 = 0.2 s per step; the
        # bound, with the run without overlap: max(0.2 + 0.2 * 16 / 16, 3.2 / 8) = 0.4 s
        _run("hier_1x8_int8_ov7", "hier", "100mbit", 0.46, compression="int8",
             overlap_steps=7, local_averages=16, total_seconds=7.36, seconds_local=3.2,
             seconds_global=0.96),
        _run("torch_1x8", "torch", "100mbit", 0.96),
        _run("hier_1x8", "hier", "1gbit", 0.43, **hier),
        _run("torch_1x8", "torch", "1gbit", 0.31),
    ]
    models = {"sync": 6.5, "hier_1x8": 0.9, "torch_1x8": 1.0, "hier_1x8_int8": 0.5}
    planned = {"hier_1x8": 0.80, "hier_1x8_int8_ov7": 0.38}
    got = targets.check(runs, lambda r: models.get(r["name"]) if r["rate"] == "100mbit"
                        else None, lambda r: planned.get(r["name"]) if r["rate"] == "100mbit"
                        else None)
    assert [(t.number, t.status()) for t in got] == [
        (1, "met"), (1, "missed"), (2, "met"), (3, "met"), (3, "met"), (4, "missed")]
    assert got[0].what == ("identical work at 100mbit, K1=1 K2=8: hvd_hier <= PyTorch's "
                           "averager")
    assert got[0].figures == "850 against 960 ms (1.13x)"
    assert got[1].figures == "430 against 310 ms (0.72x)"
    assert got[2].figures == ("K1=1 K2=8 + int8 + overlap 7: 460 ms against 960 ms (2.09x) "
                              "and 6000 ms (13.0x)")
    assert got[3].figures == ("460 ms against a bound of 400 ms (1.15x; compute 200 + local "
                              "200 ms per step, global 3200 ms / 8)")
    assert got[4].figures == ("measured / predicted 0.92-1.14 over 4 runs (worst "
                              "hier_1x8_int8 1.14)")
    assert got[5].figures == ("measured / predicted 1.06-1.21 over 2 runs (worst "
                              "hier_1x8_int8_ov7 1.21); outside: hier_1x8_int8_ov7 1.21")
    text = targets.markdown(got)
    assert ("| 1 | identical work at 100mbit, K1=1 K2=8: hvd_hier <= PyTorch's averager | "
            "**met** | 850 against 960 ms (1.13x) |") in text
    assert "| 4 | planner within 15% of every hvd_hier run at 100mbit | missed |" in text
    # a run missing: not measured, never met
    partial = targets.check([r for r in runs if r["name"] != "sync"], lambda r: None,
                            lambda r: None)
    assert [(t.number, t.status()) for t in partial] == [
        (1, "met"), (1, "missed"), (2, "not measured"), (3, "met"), (3, "not measured"),
        (4, "not measured")]
    assert partial[2].figures == "a run is missing" and partial[4].figures == "no prediction"
    assert partial[5].figures == "no planner run"
    assert targets.check([], None, None) == [] and targets.markdown([]) == ""


def test_repeats_run_alternated_and_combine_to_the_median():
    import targets

    plan = [("compute", "compute", 1, 1, None, 0), ("plan", "plan", 1, 1, None, 0),
            ("sync", "sync", 1, 1, None, 0), ("raw_horovod", "raw_horovod", 1, 1, None, 0),
            ("hier_1x8", "hier", 1, 8, None, 0)]
    order = [(rnd, run[0]) for rnd, run in bench_network.rounds(plan, 3)]
    assert order == [(0, "compute"), (0, "plan"), (0, "sync"), (0, "raw_horovod"),
                     (0, "hier_1x8"), (1, "compute"), (1, "sync"), (1, "hier_1x8"),
                     (2, "compute"), (2, "sync"), (2, "hier_1x8")]
    assert bench_network.run_path(Path("o"), "1gbit", "sync", 0) == Path("o/runs/1gbit_sync.json")
    assert bench_network.run_path(Path("o"), "1gbit", "sync", 2) == Path(
        "o/runs/1gbit_sync_r2.json")

    def run(name, rnd, step):
        return {"rate": "1gbit", "name": name, "repeat": rnd, "summary": {"mean_step": step}}

    results = [run("sync", 0, 6.0), run("hier_1x8", 0, 0.5), {"rate": "1gbit", "name": "plan"},
               run("sync", 1, 5.0), run("hier_1x8", 1, 0.4), run("sync", 2, 6.6),
               run("hier_1x8", 2, 0.6)]
    combined = {r["name"]: r for r in bench_network.combine(results)}
    assert list(combined) == ["sync", "hier_1x8", "plan"]
    # the run of median step time, every round's step in round order
    assert combined["sync"]["repeat"] == 0 and combined["sync"]["repeat_steps"] == [6.0, 5.0, 6.6]
    assert combined["hier_1x8"]["repeat"] == 0 and combined["hier_1x8"]["repeats"] == 3
    # ratios round by round: 12, 12.5, 11 -> median 12, range 11-12.5
    assert targets.paired_ratio(combined["sync"], combined["hier_1x8"]) == (
        pytest.approx(12.0), pytest.approx(11.0), pytest.approx(12.5), 3)
    assert targets.ratio_text(combined["sync"], combined["hier_1x8"]) == (
        "12.00x, median of 3 repeats, 11.00-12.50")
    # two rounds: the faster of the two middle ones
    two = bench_network.combine([run("sync", 0, 6.0), run("sync", 1, 5.0)])
    assert two[0]["repeat"] == 1 and two[0]["repeat_steps"] == [6.0, 5.0]


def test_the_fewer_bits_methods():
    runs = bench_network.runs_for([(1, 8), (2, 2)], {"hier_int4", "hier_topk", "hier_frag4",
                                                      "hier_int8_frag4"})
    assert runs == [("hier_1x8_int4", "hier", 1, 8, "int4", 0, 1),
                    ("hier_1x8_topk0.02_int2", "hier", 1, 8, "topk0.02_int2", 0, 1),
                    ("hier_1x8_frag4", "hier", 1, 8, None, 0, 4),
                    ("hier_1x8_int8_frag4", "hier", 1, 8, "int8", 0, 4),
                    ("hier_2x2_int4", "hier", 2, 2, "int4", 0, 1),  # K2 = 2: no 4 fragments
                    ("hier_2x2_topk0.02_int2", "hier", 2, 2, "topk0.02_int2", 0, 1)]
    assert bench_network.label("hier_1x8_topk0.02_int2") == \
        "hvd_hier Hier-AVG K1=1 K2=8 + topk0.02_int2"
    assert bench_network.label("hier_1x8_int8_frag4") == \
        "hvd_hier Hier-AVG K1=1 K2=8 + int8 + 4 fragments"
    # a fragment's reduction: a quarter of the model over the link (two stages, 2 nodes)
    run = {"method": "hier", "size": 4, "ranks_per_node": 2, "k2": 8, "steps": 32,
           "params_bytes": 1000, "payload_bytes": 1200, "global_averages": 16, "fragments": 4}
    assert bench_network.analytic_link_bytes(run) == 1200 / 4 * 16
    topk = {**run, "fragments": 1, "global_averages": 4, "compression": "topk0.02_int2",
            "encoded_bytes": 112}
    assert bench_network.analytic_link_bytes(topk) == 112 * 4  # the other node's, gathered
