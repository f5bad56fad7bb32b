"""Elastic Horovod (`hvd.elastic.run`) with hvd_hier under `horovodrun --gloo` with a host
discovery script: a worker killed with SIGKILL, the job shrinking to the remaining host and
growing back, and a worker that joins with other arguments (tests/parallel/workers/elastic.py
describes the scenarios)."""

import json
import re

import numpy as np
import pytest

from harness import launch
from reference import simulate_quadratic, simulate_quadratic_levels

pytestmark = pytest.mark.parallel

# as in workers/elastic.py
K1, K2, WARMUP, LR, DIM, STEPS = 2, 3, 2, 0.1, 8, 44
OUTERS = [None, dict(lr=0.9, momentum=0.5), dict(lr=0.8, momentum=0.7, nesterov=True)]
OVERLAPS = [0, 0, 3]
# Ranks that were in a collective with a killed worker notice it within Gloo's timeout (30 s
# by default): 10 s makes each recovery 20 s shorter (docs/TESTING.md)
GLOO_TIMEOUT_S = 10


def elastic_run(folder, scenario, np_, discovery, timeout, *args):
    """Start the elastic job with ``discovery`` as its host discovery script, in which
    ``$FLAG`` is ``folder/host2``, a file the workers create or remove."""
    script = folder / "discover.sh"
    script.write_text(f"#!/bin/sh\nFLAG={folder / 'host2'}\n{discovery}\nexit 0\n")
    script.chmod(0o755)
    options = ["--gloo", "-np", np_, "--min-np", 2, "--max-np", 4, "--host-discovery-script",
               script, "--blacklist-cooldown-range", 1, 2]
    return launch(options, "elastic.py", folder, scenario, *args, timeout=timeout,
                  env={"HOROVOD_GLOO_TIMEOUT_SECONDS": str(GLOO_TIMEOUT_S)})


# groups per host, or group_size=3 fitted by the rule to 2 ranks per group on 4 and on 2 ranks
# (Horovod numbers the ranks host by host: the same groups), logged at every setup
RULE_LOGS = {
    "local": [],
    "3": ["hvd_hier: group_size=3 does not divide the 4 ranks; using groups of 2, the largest "
          "divisor of 4 not above 3",
          "hvd_hier: group_size=3 is larger than the 2 ranks; using groups of 2, the largest "
          "divisor of 2 not above 3"],
}


@pytest.mark.parametrize("group_size", ["local", "3"])
def test_killed_worker_shrinks_the_job_and_a_host_added_back_grows_it(tmp_path, group_size):
    (tmp_path / "host2").touch()
    out = elastic_run(tmp_path, "kill_and_grow", 4, "echo localhost:2\n"
                      "[ -e $FLAG ] && echo 127.0.0.1:2", 300, group_size)
    for line in RULE_LOGS[group_size]:
        assert line in out, (line, out[-4000:])
    # the second rank of 127.0.0.1: rank 1 or 3, as Horovod ordered the hosts
    assert re.search(r"elastic rank [13]/4: SIGKILL to myself before step 17", out), out[-4000:]
    finals = [json.loads((tmp_path / f"final_rank{r}.json").read_text()) for r in range(4)]
    # 4 ranks on two hosts; the kill loses steps 15-16 (the last commit was after step 14);
    # 2 ranks on localhost; grown back at the commit after step 32. The two workers that
    # survived saw all of it, the two added saw the part from the growth on. (A loaded
    # machine may add a reset that changes nothing, at a commit: the segments are read from
    # what the workers saw, and the model is checked against the simulation of those.)
    seen = [f["segments"] for f in finals]
    segments = max(seen, key=len)
    assert all(s == segments[-len(s):] for s in seen), (seen, out[-4000:])
    four, two = [[0, 1], [2, 3]], [[0, 1]]
    assert segments[0] == {"step": 0, "size": 4, "schedule": 1, "groups": four}, seen
    shrunk = [s for s in segments if s["size"] == 2]
    assert shrunk and shrunk[0] == {"step": 14, "size": 2, "schedule": 15, "groups": two}, seen
    grown = next(i for i, s in enumerate(segments) if s["size"] == 4 and s["step"] > 0)
    assert segments[grown] == {"step": 32, "size": 4, "schedule": 33, "groups": four}, seen
    assert all(s["size"] == 2 and s["groups"] == two for s in segments[1:grown]), seen
    assert all(s["size"] == 4 and s["groups"] == four for s in segments[grown:]), seen
    assert sorted(len(s) for s in seen) == [len(segments) - grown] * 2 + [len(segments)] * 2
    for before, after, groups, step in ((4, 2, "[[0, 1]]", 14), (2, 4, "[[0, 1], [2, 3]]", 32)):
        line = (f"hvd_hier: Horovod was initialised again (elastic reset): {before} ranks before, "
                f"{after} ranks in local groups {groups}; the schedule continues at step {step} "
                f"(K1={K1}, K2={K2}, warmup {WARMUP})")
        assert line in out, (line, out[-4000:])
    assert [f["steps"] for f in finals] == [STEPS] * 4 and {f["size"] for f in finals} == {4}
    assert all(f["w"] == finals[0]["w"] for f in finals), "ranks end with different models"
    w0 = np.linspace(-1.0, 1.0, DIM)
    want = simulate_quadratic(w0, LR, [(s["step"], s["groups"]) for s in segments], K1, K2,
                              WARMUP, STEPS, DIM)
    got = np.array(finals[0]["w"])
    assert np.allclose(got, want[0], rtol=0, atol=1e-12), (got, want[0])
    # the comparison can tell: the same job resumed from the commit before (step 8), or one
    # that never shrank, ends elsewhere
    for other in ([(0, [[0, 1], [2, 3]]), (8, [[0, 1]]), (32, [[0, 1], [2, 3]])],
                  [(0, [[0, 1], [2, 3]])]):
        wrong = simulate_quadratic(w0, LR, other, K1, K2, WARMUP, STEPS, DIM)
        assert not np.allclose(got, wrong[0], rtol=0, atol=1e-4), other
    # (horovodrun prefixes a line with the worker's first slot, not its rank now)
    assert out.count("PASS elastic finished") == 4, out[-3000:]


def test_three_levels_shrink_and_grow(tmp_path):
    """Three levels [(2, 2), (4, 4), (12, "all")], outer optimizers at the upper two, the
    outermost overlapped with 3 steps: on 2 ranks the rule fits the middle level to pairs,
    every level's groups are rebuilt after each reset, and the anchors, outer momentum and
    pending corrections (each commit is taken with the outermost reduction in flight) are
    restored with the commit, against a simulation."""
    (tmp_path / "host2").touch()
    out = elastic_run(tmp_path, "kill_and_grow", 4, "echo localhost:2\n"
                      "[ -e $FLAG ] && echo 127.0.0.1:2", 300, "levels")
    note = ("hvd_hier: levels[1]: group_size=4 is larger than the 2 ranks; using groups of 2, the "
            "largest divisor of 2 not above 4 that is a multiple of 2")
    assert note in out, out[-4000:]
    four = [[[0, 1], [2, 3]], [[0, 1, 2, 3]], [[0, 1, 2, 3]]]
    two = [[[0, 1]], [[0, 1]], [[0, 1]]]
    for before, after, groups, step in ((4, 2, two, 14), (2, 4, four, 26)):
        line = (f"hvd_hier: Horovod was initialised again (elastic reset): {before} ranks before, "
                f"{after} ranks in levels {groups}; the schedule continues at step {step} "
                f"(periods [2, 4, 12], warmup {WARMUP})")
        assert line in out, (line, out[-4000:])
    finals = [json.loads((tmp_path / f"final_rank{r}.json").read_text()) for r in range(4)]
    # the segments as the workers saw them (see the test above)
    seen = [[(s["step"], s["level_groups"]) for s in f["segments"]] for f in finals]
    segments = max(seen, key=len)
    assert all(s == segments[-len(s):] for s in seen), (seen, out[-4000:])
    grown = next(i for i, (step, groups) in enumerate(segments) if groups == four and step > 0)
    assert segments[:2] == [(0, four), (14, two)] and segments[grown] == (26, four), seen
    assert all(g == two for _, g in segments[1:grown]), seen
    assert all(g == four for _, g in segments[grown:]), seen
    assert sorted(len(s) for s in seen) == [len(segments) - grown] * 2 + [len(segments)] * 2
    assert [f["steps"] for f in finals] == [50] * 4 and {f["size"] for f in finals} == {4}
    assert all(f["w"] == finals[0]["w"] for f in finals), "ranks end with different models"
    w0 = np.linspace(-1.0, 1.0, DIM)
    want = simulate_quadratic_levels(w0, LR, segments, [2, 4, 12], WARMUP, 50, DIM, OUTERS,
                                     OVERLAPS)
    got = np.array(finals[0]["w"])
    assert np.allclose(got, want[0], rtol=0, atol=1e-12), (got, want[0])
    never_shrank = simulate_quadratic_levels(w0, LR, [(0, four)], [2, 4, 12], WARMUP, 50, DIM,
                                             OUTERS, OVERLAPS)
    plain = simulate_quadratic_levels(w0, LR, segments, [2, 4, 12], WARMUP, 50, DIM,
                                      overlaps=OVERLAPS)
    assert not np.allclose(got, plain[0], rtol=0, atol=1e-4)  # the outer steps mattered
    # the corrections mattered: the run without overlap ends elsewhere
    unlapped = simulate_quadratic_levels(w0, LR, segments, [2, 4, 12], WARMUP, 50, DIM, OUTERS)
    assert not np.allclose(got, unlapped[0], rtol=0, atol=1e-4)
    assert not np.allclose(got, never_shrank[0], rtol=0, atol=1e-4)
    assert out.count("PASS elastic finished") == 4, out[-3000:]


def test_a_worker_joining_with_other_arguments_fails_every_rank_alike(tmp_path):
    # (an elastic job that starts on a single host does not start in Horovod 0.28.1: two)
    out = elastic_run(tmp_path, "disagree", 2, "n=1; [ -e $FLAG ] && n=2\n"
                      "echo localhost:$n\necho 127.0.0.1:$n", 300)
    reports = re.findall(r"elastic rank (\d)/4: ValueError: (.*)", out)
    assert sorted(r for r, _ in reports) == ["0", "1", "2", "3"], out[-4000:]
    assert {m for _, m in reports} == {
        "hvd_hier.DistributedOptimizer: ranks disagree on local_steps: rank 0 has 2, rank 1 has "
        "3; every rank must pass the same arguments"}, reports
    assert out.count("PASS elastic disagreement reported") == 4, out[-4000:]
