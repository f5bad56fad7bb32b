"""The benchmark runs (one repeat, one model): its harness cannot rot unseen. Not a timing test."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_average_runs_and_reports_every_method(tmp_path):
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_average.py"), "--models", "transformer_block",
         "--dtypes", "float32,bfloat16", "--repeats", "1", "--codec-model", "transformer_block",
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out_json.read_text())
    f32, bf16 = result["rows"]
    assert (f32["model"], f32["dtype"], f32["tensors"]) == ("transformer_block", "float32", 12)
    assert abs(f32["MB"] - 12596224 * 4 / 1e6) < 1e-9
    for method in ("fused", "flat", "torch", "torch_copy", "horovod", "bound"):
        assert f32[f"{method}_ms"] > 0, method
    assert bf16["horovod_ms"] is None  # Horovod's CPU operations refuse bfloat16
    # one bucket buffer (25 MiB) for the fused path, a whole flat copy (50 MB) for PyTorch's
    peak = result["peak_extra_bytes"]
    assert peak["transformer_block/fused"] < 40e6 < peak["transformer_block/torch"], peak
    assert peak["transformer_block/flat"] < 5e6, peak  # no buffer at all
    codec = result["codec"]
    assert (codec["model"], codec["dtype"], codec["elements"], codec["tensors"]) == (
        "transformer_block", "float32", 12596224, 12)
    assert codec["calls"] >= 2  # 50 MB of parameters in 25 MiB buckets
    assert set(codec["ops"]) == {"encode_int8_res", "encode_bf16", "apply_int8", "apply_bf16"}
    for name, op in codec["ops"].items():
        assert op["ms"] > 0 and op["GBps"] > 0 and op["vs_bound"] > 0, name
    assert codec["ops"]["encode_bf16"]["bytes_per_element"] == 10
