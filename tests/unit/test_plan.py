"""The planner's cost model, grid and recommendation, without processes (closed forms)."""

import pytest

from hvd_hier.plan import cli as plan

# 2 nodes x 2 ranks, a 45 MB model, 12.5 MB/s per node's uplink
CLUSTER = plan.Cluster(p=4, l=2, t_compute=0.1, t_local=0.2, b_inter=12.5e6)


def test_link_bytes_of_one_and_two_stages():
    assert CLUSTER.two_stage  # 2 nodes of 2 ranks
    assert not plan.Cluster(p=4, l=1, t_compute=0.1, t_local=0.0, b_inter=1.0).two_stage
    assert not plan.Cluster(p=4, l=4, t_compute=0.1, t_local=0.0, b_inter=1.0).two_stage
    assert plan.ring(4) == 1.5 and plan.ring(1) == 0.0
    assert plan.global_link_bytes(100, 4, 2) == 150  # one ring over 4 ranks
    assert plan.global_link_bytes(100, 4, 2, two_stage=True) == 100  # a ring over 2 nodes
    assert plan.global_link_bytes(100, 64, 8, two_stage=True) == pytest.approx(175)
    assert plan.encoded_size(4096, "int8") == pytest.approx(1032)
    assert plan.encoded_size(4096, "bf16") == 2048
    assert plan.encoded_size(4096, None) == 4096


def test_predictions_in_closed_form():
    s = plan.Setting(1, 8)
    (p,) = plan.predict(CLUSTER, 45e6, [s])
    # two stages: 3.6 s on the link per period; 8 local averagings; half of one to gather
    step = (8 * 0.1 + 8 * 0.2 + 0.1 + 3.6) / 8
    assert p.step == pytest.approx(step)
    assert p.share == pytest.approx(1 - 0.1 / step)
    (q,) = plan.predict(CLUSTER, 45e6, [plan.Setting(1, 8, "int8", 7)])
    # 0.907 s on the link in 6 collectives (3 pieces of 2 MiB encoded, alltoall + allgather),
    # busy at all 7 boundaries: half a collective shows at each (0.529 s), more than the
    # 0.207 s the 0.7 s of computation cannot hold
    link = 45e6 / 4 * 2064 / 2048 / 12.5e6
    assert plan.overlap_collectives(45e6, 2, 45e6 / 4 * 2064 / 2048, two_stage=True) == 6
    assert q.step == pytest.approx((8 * 0.1 + 8 * 0.2 + 0.1 + link - (link - 7 * link / 12))
                                   / 8)
    # the kernels' own time, measured per codec, adds to the period: nothing hides it
    coded = plan.Cluster(**{**CLUSTER.__dict__, "t_codec": {"int8": 0.25}})
    (r,) = plan.predict(coded, 45e6, [plan.Setting(1, 8, "int8", 7)])
    assert r.step == pytest.approx(q.step + 0.25 / 8)
    (u,) = plan.predict(coded, 45e6, [s])  # not for an uncompressed setting
    assert u.step == pytest.approx(step)
    # a compressed reduction measured whole (1.5 s: collectives, gather, codec passes) stands
    # for the link, gather and codec terms; all but the codec passes hide
    whole = plan.Cluster(**{**coded.__dict__, "t_global": {"int8": 1.5}})
    (w,) = plan.predict(whole, 45e6, [plan.Setting(1, 8, "int8")])
    assert w.step == pytest.approx((8 * 0.1 + 8 * 0.2 + 1.5) / 8)
    (v,) = plan.predict(whole, 45e6, [plan.Setting(1, 8, "int8", 7)])
    assert v.step == pytest.approx((8 * 0.1 + 8 * 0.2 + 1.5 - (1.25 - 7 * 1.25 / 12)) / 8)
    # 1 s steps: 2 boundaries busy, 1.25 / 12 s shows at each, the codec passes' 0.25 s too
    slow = plan.Cluster(**{**whole.__dict__, "t_compute": 1.0})
    (y,) = plan.predict(slow, 45e6, [plan.Setting(1, 8, "int8", 7)])
    assert y.step == pytest.approx((8 * 1.0 + 8 * 0.2 + 0.25 + 2 * 1.25 / 12) / 8)
    assert "; a global reduction with int8 1500.0 ms" in plan.table(whole, 45e6, [w])


def test_what_an_overlapped_reduction_hides():
    assert plan.hidden_seconds(1.0, 0, 0.5, 4) == 0.0  # not overlapped
    assert plan.hidden_seconds(1.0, 4, 0.5) == 1.0  # no granularity: all of it, in 2 s
    assert plan.hidden_seconds(1.0, 4, 0.1) == pytest.approx(0.4)  # 0.4 s of computation
    # 4 collectives of 0.25 s over the 2 boundaries it keeps busy: 0.125 s shows at each
    assert plan.hidden_seconds(1.0, 4, 0.5, 4) == pytest.approx(0.75)
    # 10 of 0.1 s: 0.05 s at each of 4 boundaries, less than the 0.6 s that does not fit
    assert plan.hidden_seconds(1.0, 4, 0.1, 10) == pytest.approx(0.4)
    assert plan.hidden_seconds(1.0, 8, 0.0, 1) == 0.0  # nothing to hide behind
    assert plan.overlap_collectives(45e6, 2, two_stage=True) == 11  # 22 pieces of 2 MiB
    assert plan.overlap_collectives(45e6, 2) == 22
    assert plan.overlap_collectives(1.0, 8, 1.0, two_stage=True) == 2


def test_the_shortest_overlap_that_hides_as_much():
    # 3.6 s on the link, 11 collectives of plain pieces; 1 s of computation per step: D = 4
    # hides all but what the busy boundaries show, D = 7 no more (within 1%)
    slow = plan.Cluster(**{**CLUSTER.__dict__, "t_compute": 1.0})
    preds = plan.predict(slow, 45e6, [plan.Setting(1, 8, None, 7), plan.Setting(1, 8)])
    short = plan.shortest_overlap(slow, 45e6, preds)
    assert short[1] is preds[1]  # not overlapped: as it was
    d = short[0].setting.overlap
    assert short[0].setting == plan.Setting(1, 8, None, d) and 1 <= d < 7
    assert short[0].step <= 1.01 * preds[0].step
    (shorter,) = plan.predict(slow, 45e6, [plan.Setting(1, 8, None, d - 1)])
    assert shorter.step > 1.01 * preds[0].step  # the smallest such D
    # computation too short to hide it all: every step of the period is needed
    fast = plan.predict(CLUSTER, 45e6, [plan.Setting(1, 8, None, 7)])
    assert plan.shortest_overlap(CLUSTER, 45e6, fast)[0].setting.overlap == 7


def test_the_grid_and_the_recommendation():
    grid = plan.candidates(periods=(4, 8), k1s=(1, 4), codecs=(None, "int8"))
    assert plan.Setting(1, 4, None, 0) in grid and plan.Setting(4, 2, "int8", 7) in grid
    assert len(grid) == 2 * 2 * 2 * 2
    assert all(s.k1 * s.k2 in (4, 8) for s in grid)
    fast = plan.Prediction(plan.Setting(4, 8, "int8", 31), 1.00, 0.1)
    close = plan.Prediction(plan.Setting(1, 8, None, 0), 1.08, 0.2)
    closer = plan.Prediction(plan.Setting(2, 4, "int8", 0), 1.09, 0.2)
    slow = plan.Prediction(plan.Setting(1, 4, None, 0), 1.50, 0.5)
    # within 10% of the fastest, the one that averages most often (smallest period, K1)
    assert plan.recommend([fast, close, closer, slow]) is close
    assert plan.recommend([fast, slow]) is fast
    assert close.setting.arguments() == "local_steps=1, local_rounds=8"
    assert fast.setting.arguments() == ("local_steps=4, local_rounds=8, "
                                        "global_compression='int8', overlap_steps=31")
    text = plan.table(CLUSTER, 45e6, [fast, close, slow], close)
    assert "| K1=1 K2=8 **(recommended)** | 1080.0 ms | 20% |" in text
    assert "Recommended: hvd_hier.DistributedOptimizer(..., local_steps=1, local_rounds=8)" in text


@pytest.mark.parametrize("codec", ["fp16", "bf16", "int8", "int4", "int2", "topk0.02_int2",
                                   "topk0.1_int8", "topk0.05_int4", "topk0.001_int2"])
def test_the_planners_record_sizes_are_the_kernels(codec):
    from hvd_hier.config.codecs import codec_named
    from hvd_hier.reduce.codec import encoded_bytes

    assert plan.record_bytes(codec) == encoded_bytes(codec_named(codec), 2048)
    assert plan.is_gathered(codec) == (codec not in ("fp16", "bf16", "int8"))


def test_gathered_codecs_and_fragments_in_closed_form():
    # int2 at the top, two stages over 2 nodes: the other node's contribution crosses
    encoded = 45e6 / 4 / 2048 * 528
    (p,) = plan.predict(CLUSTER, 45e6, [plan.Setting(1, 8, "int2")])
    assert p.step == pytest.approx((8 * 0.1 + 8 * 0.2 + 0.1 + encoded / 12.5e6) / 8)
    assert p.peak == pytest.approx(encoded)
    # four fragments: the same bytes per period in four reductions (four latencies), a
    # quarter of them at each; the node averages at every fragment's step
    lat = plan.Cluster(**{**CLUSTER.__dict__, "latency": 0.01})
    whole, parts = plan.predict(lat, 45e6, [plan.Setting(1, 8), plan.Setting(1, 8, None, 0, 4)])
    assert parts.step == pytest.approx(whole.step + 3 * 0.01 / 8)
    assert parts.peak == pytest.approx(whole.peak / 4) and whole.peak == 45e6
    # overlapped, each fragment hides behind its own D = 1 step
    (o,) = plan.predict(lat, 45e6, [plan.Setting(1, 8, None, 1, 4)])
    hidden = 4 * plan.hidden_seconds(0.9, 1, 0.1, 3)  # 11 pieces of the 22 per fragment
    assert o.step == pytest.approx((8 * 0.1 + 8 * 0.2 + 0.1 + 4 * 0.01 + 3.6 - hidden) / 8)


def test_fragments_and_topk_in_the_grid_and_the_arguments():
    grid = plan.candidates(periods=(8,), k1s=(1, 2), codecs=(None,), fragments=(1, 4))
    assert [s.describe() for s in grid] == [
        "K1=1 K2=8", "K1=1 K2=8, overlap 7", "K1=1 K2=8, 4 fragments",
        "K1=1 K2=8, overlap 1, 4 fragments", "K1=2 K2=4", "K1=2 K2=4, overlap 7",
        "K1=2 K2=4, 4 fragments", "K1=2 K2=4, overlap 1, 4 fragments"]
    assert plan.Setting(1, 8, "topk0.02_int2").arguments() == (
        "local_steps=1, local_rounds=8, global_compression=hvd_hier.TopK(0.02, values='int2')")
    assert plan.Setting(2, 4, "int8", 1, 4).arguments() == (
        "levels=[(2, 'local'), hvd_hier.Level(8, 'all', compression='int8', overlap_steps=1, "
        "fragments=4)]")
    with pytest.raises(SystemExit):  # argparse names the flag and the value, before Horovod
        plan.main(["--params", "10", "--codecs", "none,int3"])
