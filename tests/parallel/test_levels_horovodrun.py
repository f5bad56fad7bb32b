"""Any number of averaging levels, under horovodrun -np 8 on two host names."""

import pytest

from harness import horovodrun

pytestmark = pytest.mark.parallel

SECTIONS = ["three", "three_warmup", "uneven_periods", "rank_lists", "local_middle",
            "equal_periods", "two_level_form", "resume_mid_cycle", "not_nested"]


def test_levels_follow_the_simulation_at_every_step():
    out = horovodrun("levels.py", np=8, hosts="localhost:4,127.0.0.1:4", timeout=420)
    for name in SECTIONS:
        assert out.count(f"PASS {name}\n") == 8, f"section {name!r}:\n{out[-4000:]}"


OUTER_SECTIONS = ["outer_three", "outer_two_levels_warmup", "outer_lr1_is_plain",
                  "outer_real_values", "outer_three.flat", "outer_buffers", "outer_amp_warmup",
                  "outer_resume"]


def test_outer_optimizers_follow_the_simulation_at_every_step():
    out = horovodrun("outer.py", np=8, hosts="localhost:4,127.0.0.1:4", timeout=420)
    for name in OUTER_SECTIONS:
        assert out.count(f"PASS {name}\n") == 8, f"section {name!r}:\n{out[-4000:]}"


COMPRESSED_SECTIONS = ["fp16_top", "bf16_top", "int8_top", "int8_middle_bf16_top", "bf16_outer",
                       "int8_top.flat", "compressed_resume", "compressed_nonfinite_skip"]


def test_compressed_levels_follow_the_simulation_at_every_step():
    out = horovodrun("compressed.py", np=8, hosts="localhost:4,127.0.0.1:4", timeout=420)
    for name in COMPRESSED_SECTIONS:
        assert out.count(f"PASS {name}\n") == 8, f"section {name!r}:\n{out[-4000:]}"


OVERLAP_SECTIONS = ["k1_d2", "outer_d2", "three_levels", "outer_int8_d1", "k1_d2.flat",
                    "kavg_d1.shorthand", "overlap_resume", "overlap_nonfinite"]


def test_overlapped_levels_follow_the_simulation_at_every_step():
    out = horovodrun("overlap.py", np=8, hosts="localhost:4,127.0.0.1:4", timeout=420)
    for name in OVERLAP_SECTIONS:
        assert out.count(f"PASS {name}\n") == 8, f"section {name!r}:\n{out[-4000:]}"
