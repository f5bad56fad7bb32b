"""The warm server that starts the multi-rank tests' ranks (tests/parallel/warm.py): a rank
gets the client's arguments, environment, directory and streams, and the client exits as the
rank did; signals reach the rank; a dead client takes its rank with it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARALLEL = Path(__file__).resolve().parents[1] / "parallel"
sys.path.insert(0, str(PARALLEL))
import harness  # noqa: E402

SCRIPT = """
import os, signal, sys, time
import torch
print("argv", sys.argv[1:], "cwd", os.getcwd(), "env", os.environ.get("WARM_TEST"))
print("path0", sys.path[0] == os.path.dirname(os.path.abspath(__file__)))
print("main", __name__, "dynamo loaded", "torch._dynamo" in sys.modules, flush=True)
sys.stderr.write("to stderr\\n")
mode = sys.argv[1]
if mode == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "wait":
    signal.signal(signal.SIGTERM, lambda *_: (print("got SIGTERM", flush=True), sys.exit(7)))
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(60)
sys.exit(int(mode))
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("warm")
    script = folder / "rank.py"
    script.write_text(SCRIPT)
    socket_path = harness.warm_server()

    def start(*args, **kw):
        env = dict(os.environ, WARM_TEST="yes")
        return subprocess.Popen([sys.executable, str(PARALLEL / "warm.py"), "run", socket_path,
                                 str(script), *map(str, args)], cwd=folder, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    start.folder = folder
    return start


def test_the_rank_runs_the_script_as_main_and_exits_with_its_code(client):
    proc = client(3, "x y")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert out.splitlines() == [
        f"argv ['3', 'x y'] cwd {client.folder} env yes", "path0 True",
        "main __main__ dynamo loaded True"]
    assert err == "to stderr\n"


def test_a_rank_killed_by_a_signal_kills_its_client_alike(client):
    proc = client("kill")
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_a_signal_to_the_client_reaches_the_rank(client):
    pid_file = client.folder / "pid_term"
    proc = client("wait", pid_file)
    _wait_for(pid_file)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 7 and "got SIGTERM" in out


def test_a_dead_client_takes_its_rank_with_it(client):
    pid_file = client.folder / "pid_kill"
    proc = client("wait", pid_file)
    _wait_for(pid_file)
    rank = int(pid_file.read_text())
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while _alive(rank) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(rank)


def _wait_for(path):
    deadline = time.monotonic() + 60
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
