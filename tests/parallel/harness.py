"""Runs a worker script under `horovodrun --gloo` with a hard timeout."""

import os
import signal
import subprocess
import sys
from pathlib import Path

WORKERS = Path(__file__).resolve().parent / "workers"
ROOT = Path(__file__).resolve().parents[2]


def horovodrun(worker, *args, np=4, hosts=None, timeout=240, env=None, expect_rc=0):
    """Run tests/parallel/workers/<worker> (or a script path) on `np` ranks; return the output.

    Fails the test (with the output) when the exit code differs from `expect_rc` or the run
    exceeds `timeout` seconds, killing the whole process group so nothing is left hanging.
    """
    return launch(["-np", str(np), "-H", hosts or f"localhost:{np}", "--gloo"], worker, *args,
                  timeout=timeout, env=env, expect_rc=expect_rc)


def launch(options, worker, *args, timeout=240, env=None, expect_rc=0):
    """`horovodrun <options> python <worker> <args>`, as `horovodrun` above."""
    horovodrun_bin = Path(sys.executable).parent / "horovodrun"
    cmd = [str(horovodrun_bin), *map(str, options),
           sys.executable, str(WORKERS / worker), *map(str, args)]  # a path may replace WORKERS
    run_env = dict(os.environ)
    run_env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}",
                    "PYTHONUNBUFFERED": "1"})
    run_env.update(env or {})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=run_env, cwd=ROOT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{worker} {args} did not finish within {timeout}s:\n{out[-6000:]}")
    if proc.returncode != expect_rc:
        raise AssertionError(
            f"{worker} {args} exited with {proc.returncode} (expected {expect_rc}):\n{out[-8000:]}")
    return out


def passed_lines(out, np=4):
    """The `PASS <name>` lines each rank printed, as {name: set(ranks)}."""
    seen = {}
    for line in out.splitlines():
        if "PASS " not in line:
            continue
        rank = int(line.split("]", 1)[0].lstrip("[")) if line.startswith("[") else -1
        name = line.split("PASS ", 1)[1].strip()
        seen.setdefault(name, set()).add(rank)
    return seen
