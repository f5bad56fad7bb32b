"""Runs a worker script under `horovodrun --gloo` with a hard timeout."""

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKERS = Path(__file__).resolve().parent / "workers"
WARM = Path(__file__).resolve().with_name("warm.py")
ROOT = Path(__file__).resolve().parents[2]


def horovodrun(worker, *args, np=4, hosts=None, timeout=240, env=None, expect_rc=0):
    """Run tests/parallel/workers/<worker> (or a script path) on `np` ranks; return the output.

    Fails the test (with the output) when the exit code differs from `expect_rc` or the run
    exceeds `timeout` seconds, killing the whole process group so nothing is left hanging.
    The ranks start from a warm interpreter (tests/parallel/warm.py), unless
    HVD_HIER_TEST_WARM=0 or under coverage.
    """
    return launch(["-np", str(np), "-H", hosts or f"localhost:{np}", "--gloo"], worker, *args,
                  timeout=timeout, env=env, expect_rc=expect_rc)


def launch(options, worker, *args, timeout=240, env=None, expect_rc=0):
    """`horovodrun <options> python <worker> <args>`, as `horovodrun` above (the elastic
    tests give their own options)."""
    horovodrun_bin = Path(sys.executable).parent / "horovodrun"
    cmd = [str(horovodrun_bin), *map(str, options),
           *rank_python(), str(WORKERS / worker), *map(str, args)]  # a path may replace WORKERS
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


def rank_python():
    """How a rank starts Python: from the warm server (tests/parallel/warm.py) unless
    HVD_HIER_TEST_WARM=0 (docs/TESTING.md), and never under coverage (each rank records its
    own data from the start); else this interpreter. The examples and benchmarks take it as
    their --python."""
    if os.environ.get("HVD_HIER_TEST_WARM", "1") != "0" \
            and "COVERAGE_PROCESS_START" not in os.environ:
        return [sys.executable, str(WARM), "run", warm_server()]
    return [sys.executable]


_SERVER = {}


def warm_server():
    """The socket of this session's warm server (tests/parallel/warm.py), started on first use
    and stopped at exit, its folder removed (it also stops by itself once this process is
    gone)."""
    if "path" not in _SERVER:
        folder = tempfile.mkdtemp(prefix="hvd_hier_warm_")
        path = os.path.join(folder, "server.sock")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["OMP_NUM_THREADS"] = "1"
        log = open(os.path.join(folder, "server.log"), "w")
        proc = subprocess.Popen([sys.executable, str(WARM), "serve", path], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=ROOT)
        atexit.register(shutil.rmtree, folder, True)  # (atexit runs these last first)
        atexit.register(proc.kill)
        deadline = time.monotonic() + 120
        while not os.path.exists(path):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the warm server did not start: {open(log.name).read()}")
            time.sleep(0.05)
        _SERVER["path"] = path
    return _SERVER["path"]


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
