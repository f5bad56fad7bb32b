"""Any number of averaging levels, under horovodrun -np 8 on two host names: each worker
checks its configurations against the independent simulation at every step and reports a
PASS line per section on every rank."""

import pytest

from harness import horovodrun

pytestmark = pytest.mark.parallel

WORKERS = {
    "levels.py": ["three", "three_warmup", "uneven_periods", "rank_lists", "local_middle",
                  "equal_periods", "two_level_form", "resume_mid_cycle", "not_nested"],
    "outer.py": ["outer_three", "outer_two_levels_warmup", "outer_lr1_is_plain",
                 "outer_real_values", "outer_three.flat", "outer_buffers", "outer_amp_warmup",
                 "outer_resume"],
    "compressed.py": ["fp16_top", "bf16_top", "int8_top", "int8_middle_bf16_top", "bf16_outer",
                      "int4_top", "int2_top", "int2_middle_int4_top", "int2_outer",
                      "topk_top", "topk_middle_topk_top", "topk_outer",
                      "int2_top_no_feedback", "topk_outer_no_feedback", "int8_top.flat", "int2_top.flat", "compressed_resume",
                      "compressed_nonfinite_skip", "compressed_reset"],
    "overlap.py": ["k1_d2", "outer_d2", "three_levels", "outer_int8_d1", "outer_int2_d2", "k1_d2.flat",
                   "kavg_d1.shorthand", "overlap_resume", "overlap_nonfinite"],
    "fragments.py": ["plain_f4", "outer_f4", "int8_f2", "topk_outer_f2", "overlap_f2",
                     "overlap_int2_outer_f4", "kavg_f2", "alone_f3", "fragments_resume"],
}


@pytest.mark.parametrize("worker", list(WORKERS))
def test_levels_follow_the_simulation_at_every_step(worker):
    out = horovodrun(worker, np=8, hosts="localhost:4,127.0.0.1:4", timeout=420)
    for name in WORKERS[worker]:
        assert out.count(f"PASS {name}\n") == 8, f"section {name!r}:\n{out[-4000:]}"
