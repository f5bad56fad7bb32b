"""The GPU check (scripts/gpu_check.sh) rehearsed on the CPU: its argument handling, the
configure step, the collection of tests/gpu, the timing harness and the report, with the CUDA
steps reported as skipped. Not a timing test: the figures it prints are not asserted."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402

USAGE = ("usage: scripts/gpu_check.sh [--cpu-rehearsal] [--python PY] [--build-dir DIR] [--arch SM] "
         "[--jobs N] OUT_DIR")


def run(*args, timeout=300):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_help_prints_the_usage():
    proc = run("--help")
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0] == USAGE


@pytest.mark.parametrize("args,message", [
    ((), "gpu_check.sh: missing OUT_DIR"),
    (("--bogus", "out"), "gpu_check.sh: unknown option '--bogus'"),
    (("a", "b"), "gpu_check.sh: one OUT_DIR only, got 'a' and 'b'"),
    (("--arch", "sm90", "out"), "gpu_check.sh: --arch must be a compute capability such as 90 or 90a, got 'sm90'"),
    (("--jobs", "0", "out"), "gpu_check.sh: --jobs must be a positive integer, got '0'"),
    (("out", "--python"), "gpu_check.sh: --python needs a value"),
])
def test_bad_arguments_exit_2_with_the_reason(args, message, tmp_path):
    proc = run(*args)
    assert proc.returncode == 2
    err = proc.stderr.splitlines()
    assert err[0] == message and err[1] == USAGE
    assert not (ROOT / "out").exists()


def test_without_a_gpu_it_fails_loudly_instead_of_passing(tmp_path):
    proc = run("--python", sys.executable, "--build-dir", tmp_path / "build", tmp_path / "out")
    assert proc.returncode == 1
    assert "gpu_check.sh: FAILED: torch sees no CUDA device (torch.cuda.is_available() is False" in proc.stderr


def test_unknown_python_fails(tmp_path):
    proc = run("--python", "no-such-python3", tmp_path / "out")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "gpu_check.sh: FAILED: python 'no-such-python3' not found"


def test_cpu_rehearsal_end_to_end(tmp_path):
    out, build = tmp_path / "out", tmp_path / "build"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu-rehearsal", "--python", sys.executable,
                           "--build-dir", str(build), str(out)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["rehearsal"] is True and report["ok"] is True
    # the extension came from the build folder, not from the repository
    assert Path(report["extension"]["path"]).parent == build / "python" / "hvd_hier"
    assert report["extension"]["vector_bytes"] == 16
    # every test file of tests/gpu was collected
    assert report["tests"]["collected"] >= 200
    log = (out / "pytest.log").read_text()
    assert "test_device_kernels.py" in log and "test_device_averagers.py" in log
    # the timing harness ran every case, with no target on the CPU
    ops = [(r["op"], r["tensors"], r["bucket"], r["scale"], r["path"].split(" ")[0]) for r in report["timings"]]
    assert ops == [("pack", "float32", "float32", 1.0, "vector"), ("unpack", "float32", "float32", 0.25, "vector"),
                   ("pack", "bfloat16", "bfloat16", 1.0, "vector"), ("unpack", "bfloat16", "bfloat16", 0.25, "vector"),
                   ("pack", "float32", "bfloat16", 1.0, "vector"), ("unpack", "float32", "bfloat16", 0.25, "vector"),
                   ("pack", "float32", "float32", 1.0, "scalar"),
                   ("unpack", "bfloat16", "bfloat16", 1.0, "vector"), ("pack", "bfloat16", "bfloat16", 0.25, "vector"),
                   ("encode", "float32", "int8 codes + residual", 1.0, "codec"),
                   ("apply", "float32", "int8 codes", 1.0, "codec"),
                   ("encode", "float32", "bf16 codes", 1.0, "codec"),
                   ("apply", "float32", "bf16 codes", 1.0, "codec"),
                   ("encode", "float32", "int4 codes + residual", 1.0, "codec"),
                   ("apply", "float32", "int4 codes", 1.0, "codec"),
                   ("encode", "float32", "int2 codes + residual", 1.0, "codec"),
                   ("apply", "float32", "int2 codes", 1.0, "codec"),
                   ("encode", "float32", "topk codes + residual", 1.0, "codec"),
                   ("apply", "float32", "topk codes", 1.0, "codec")]
    assert all(r["kernel_us"] > 0 and r["copy_us"] > 0 and r["target"] is None for r in report["timings"])
    table = (out / "gpu_check.md").read_text()
    assert proc.stdout.endswith(table)  # the table is printed last
    assert "CPU REHEARSAL (no GPU: CUDA steps skipped)" in table
    assert "| build | skipped (cpu rehearsal)" in table
    assert "| overall | **PASSED**" in table
    assert "| encode | float32 → int8 codes + residual |" in table
    assert "| apply | bf16 codes → float32 |" in table


def fake_report(fraction):
    row = {"op": "pack", "scale": 1.0, "tensors": "float32", "bucket": "float32", "path": "vector", "model": "resnet50",
           "MB_moved": 204.5, "kernel_us": 50.0, "copy_us": 50.0 * fraction, "kernel_GBps": 4090.0,
           "fraction_of_copy": fraction, "target": 0.8}
    return {"rehearsal": False, "ok": True, "seconds": 123.4,
            "machine": {"card": "NVIDIA H200", "capability": "9.0", "multiprocessors": 132, "memory_gib": 139.8,
                        "nvidia_smi": "580.1, 1980 MHz, 3201 MHz", "date": "2026-11-30 12:00 UTC",
                        "torch": "2.11.0+cu130", "torch_cuda": "13.0", "python": "3.12.3", "cpus": 16},
            "build": {"arch": "90", "seconds": 61.2},
            "tests": {"seconds": 30.5, "files": {"test_device_kernels": {"passed": 180, "failed": 0, "skipped": 0,
                                                                          "seconds": 20.0}},
                      "total": {"passed": 180, "failed": 0, "skipped": 0}},
            "timings": [row]}


def test_report_on_a_gpu_marks_met_and_missed_targets():
    met = gpu_check.markdown(fake_report(0.85))
    assert "| card | NVIDIA H200, sm_90, 132 SMs, 139.8 GiB; driver / max SM, memory clocks: 580.1, 1980 MHz, 3201 MHz |" in met
    assert "| build | sm_90 with CUDA in 61.2 s |" in met
    assert "| tests/gpu: test_device_kernels | 180 passed, 0 failed, 0 skipped (20.0 s) |" in met
    assert "| pack | float32 → float32 | 1 | vector | resnet50 | 204.5 | 50.0 | 42.5 | 4090.0 | 0.85 | ≥ 0.8: met |" in met
    missed = gpu_check.markdown(fake_report(0.5))
    assert "| 0.5 | ≥ 0.8: **MISSED** |" in missed


def test_junit_counts(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.gpu.test_device_kernels" name="a" time="1.5"/>'
        '<testcase classname="tests.gpu.test_device_kernels" name="b" time="0.5"><failure message="x"/></testcase>'
        '<testcase classname="tests.gpu.test_device_averagers" name="c" time="0.25"><skipped/></testcase>'
        '</testsuite></testsuites>')
    counts = gpu_check.junit_counts(xml)
    assert counts["files"]["test_device_kernels"] == {"passed": 1, "failed": 1, "skipped": 0, "seconds": 2.0}
    assert counts["total"] == {"passed": 1, "failed": 1, "skipped": 1, "seconds": 2.25}
