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


MODULE = """
import os, sys
print("argv", sys.argv, "name", __name__, "path0", sys.path[0] == os.getcwd())
"""

NAMESPACES = """
import os
import socket
print(*(os.readlink(f"/proc/self/ns/{k}") for k in ("net", "mnt", "uts")), socket.gethostname(),
      os.getcwd())
"""


def test_a_module_runs_as_python_m_runs_it(client):
    (client.folder / "warm_mod.py").write_text(MODULE)
    proc = subprocess.run([sys.executable, str(PARALLEL / "warm.py"), "run",
                           harness.warm_server(), "-m", "warm_mod", "a", "b"], cwd=client.folder,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (f"argv ['{client.folder / 'warm_mod.py'}', 'a', 'b'] name __main__ "
                           f"path0 True\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="entering namespaces needs root, as the "
                                              "simulated cluster does")
def test_a_client_in_other_namespaces_gets_a_rank_in_them(client):
    """As a node of the simulated cluster starts it (ip netns exec, unshare --uts): the rank
    is in the client's network, mount and host-name namespaces, not the server's."""
    script = client.folder / "ns.py"
    script.write_text(NAMESPACES)
    # the client, in new namespaces, prints its own and then runs the rank (which prints its)
    inner = (f"import os, socket, subprocess, sys; socket.sethostname('warm-node'); "
             f"print(*(os.readlink(f'/proc/self/ns/{{k}}') for k in ('net', 'mnt', 'uts')), "
             f"flush=True); sys.exit(subprocess.call("
             f"[sys.executable, {str(PARALLEL / 'warm.py')!r}, 'run', "
             f"{harness.warm_server()!r}, {str(script)!r}]))")
    proc = subprocess.run(["unshare", "--net", "--mount", "--uts", sys.executable, "-c", inner],
                          cwd=client.folder, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    client_ns, rank_line = proc.stdout.splitlines()
    *namespaces, hostname, cwd = rank_line.split()
    assert " ".join(namespaces) == client_ns
    assert hostname == "warm-node" and cwd == str(client.folder)
    assert not {os.readlink(f"/proc/self/ns/{k}") for k in ("net", "mnt", "uts")} & set(namespaces)


ENDING = """
import atexit, io, sys, threading, time, weakref
# a buffered stdout (the warm rank's own writes through): what is left in it at the end is
# written only by the final flush
sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)))
# (the warm server registered weakref.finalize's own atexit handler before the fork, as it
# did logging's and multiprocessing's: those run too, after the script's; this callback
# runs last and leaves its text in the buffer)
class Kept: pass
kept = Kept()
weakref.finalize(kept, sys.stdout.write, "finalizer ran at exit\\n")
atexit.register(print, "atexit handler ran", flush=True)
def late():
    time.sleep(0.5)
    print("non-daemon thread joined", flush=True)
threading.Thread(target=late).start()
sys.stdout.write("written before the thread's ")
if sys.argv[1] == "raise":
    raise ValueError("raised in the rank")
if sys.argv[1] == "message":
    sys.exit("a message, not a code")
sys.exit(None if sys.argv[1] == "none" else int(sys.argv[1]))
"""


@pytest.mark.parametrize("how, status", [("none", 0), ("5", 5), ("raise", 1), ("message", 1)])
def test_a_rank_ends_as_python_would_without_the_teardown(client, how, status):
    """The rank skips the modules' teardown (os._exit after its atexit handlers), yet ends as
    a fresh interpreter would: non-daemon threads joined, every atexit handler run (those the
    server registered before the fork too), the streams flushed, the exit status and the
    message of an exception."""
    script = client.folder / "ending.py"
    script.write_text(ENDING)
    proc = subprocess.run([sys.executable, str(PARALLEL / "warm.py"), "run",
                           harness.warm_server(), str(script), how], cwd=client.folder,
                          capture_output=True, text=True, timeout=60)
    cold = subprocess.run([sys.executable, str(script), how], cwd=client.folder,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == cold.returncode == status
    assert proc.stdout == cold.stdout == (
        "written before the thread's non-daemon thread joined\natexit handler ran\n"
        "finalizer ran at exit\n")
    last_line = {"raise": ["ValueError: raised in the rank"],
                 "message": ["a message, not a code"]}.get(how, [])
    assert proc.stderr.splitlines()[-1:] == cold.stderr.splitlines()[-1:] == last_line
