"""Starts the ranks of the multi-rank tests from a warm interpreter.

A rank spends seconds of CPU before it does anything: importing torch, and torch._dynamo,
which torch loads when a process builds its first optimizer. With a hundred and more ranks
per test run on two cores, that was a third of the run. So the harness starts one server per
test session that does this work once (torch, one `torch.optim.SGD`, numpy) and then forks a
process per rank from that image:

    horovodrun ... python warm.py run SOCKET worker.py ARGS...

runs a small client in the rank's place. The client hands the server its stdin, stdout and
stderr, its arguments, working directory and environment; the server forks a supervisor,
which forks the rank; the rank takes the client's file descriptors, environment, directory,
`sys.argv` and `sys.path` (the script's folder, the client's PYTHONPATH, then site-packages)
and runs the script as `__main__`. The client forwards the signals it gets (SIGTERM, SIGINT,
SIGHUP, SIGUSR1, SIGUSR2) to the rank, and exits as the rank did: with its exit code, or
killed by the same signal. When the client dies (horovodrun kills it, or the test's timeout
kills the job), the supervisor kills the rank, so nothing is left running. A client started
in other network, mount or host-name (UTS) namespaces (a node of the simulated cluster) gets a
rank in those namespaces: the rank enters the client's before it runs anything (as root, as
the cluster needs). `warm.py run SOCKET -m MODULE ARGS...` runs a module, as `python -m` does.
The rank ends as a fresh interpreter would up to its atexit handlers (non-daemon threads
joined, the handlers run, the streams flushed, the same exit status), then leaves without
tearing down its modules, which took about a second per rank (more when ranks end together).

The server imports neither Horovod nor hvd_hier: a rank imports them itself, in the order
its script does, as a fresh interpreter would. The tests start every rank of their jobs with
it (`harness.rank_python`: the harness's jobs, the elastic ones, and the examples' and
benchmarks' sweeps through their `--python`), unless `HVD_HIER_TEST_WARM=0` (never under
coverage); docs/TESTING.md says what it took to make warm ranks as robust as cold ones
beside a CPU hog.
"""

import atexit
import ctypes
import io
import json
import os
import runpy
import select
import signal
import socket
import struct
import sys
import threading

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


# -- the client, in the rank's place under horovodrun ----------------------------------------

def run(path, argv):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    payload = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(conn, [struct.pack("!I", len(payload)) + payload], [0, 1, 2])
    for sig in FORWARDED:
        signal.signal(sig, lambda number, _frame: conn.sendall(struct.pack("!i", number)))
    status = _read_exact(conn, 4)
    if status is None:
        sys.stderr.write(f"warm.py: the server ended before {argv[0]} did\n")
        sys.exit(1)
    code = struct.unpack("!i", status)[0]
    if code < 0:  # killed by a signal: die of the same one
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


# -- the server ------------------------------------------------------------------------------

def _warm_up():
    import numpy  # noqa: F401
    import torch

    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)  # loads torch._dynamo


def serve(path):
    """Accept clients until the parent (the test session) is gone. Returns only in a forked
    rank, with what it should become."""
    site_path = list(sys.path[1:])
    _warm_up()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(128)
    os.rename(path + ".tmp", path)  # the harness waits for the name
    parent = os.getppid()
    while os.getppid() == parent:
        ready, _, _ = select.select([listener], [], [], 1.0)
        _reap()
        if ready:
            conn, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                return _supervise(conn, site_path)
            conn.close()
    sys.exit(0)


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _client_namespaces(conn):
    """Open files of the client's network, mount and UTS namespaces that differ from ours."""
    client = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                 struct.calcsize("3i")))[0]
    opened = []
    for kind in ("net", "mnt", "uts"):
        theirs = f"/proc/{client}/ns/{kind}"
        if os.stat(theirs).st_ino != os.stat(f"/proc/self/ns/{kind}").st_ino:
            opened.append((kind, os.open(theirs, os.O_RDONLY)))
    return opened


def _enter(namespaces):
    libc = ctypes.CDLL(None, use_errno=True)
    for kind, fd in namespaces:
        if libc.setns(fd, 0) != 0:
            raise OSError(ctypes.get_errno(), f"warm.py: cannot enter the client's {kind} "
                                              f"namespace: {os.strerror(ctypes.get_errno())}")
        os.close(fd)


def _supervise(conn, site_path):
    """In the supervisor: receive the request, fork the rank, relay signals and the status."""
    head, fds, _, _ = socket.recv_fds(conn, 4, 3)
    size = struct.unpack("!I", head if len(head) == 4 else head + _read_exact(conn, 4 - len(head)))[0]
    request = json.loads(_read_exact(conn, size))
    namespaces = _client_namespaces(conn)
    pid = os.fork()
    if pid == 0:
        conn.close()
        # A session of its own, as horovodrun gives a cold rank: Linux shares CPU time between
        # sessions (autogroup) before it shares it between processes
        os.setsid()
        return request, fds, site_path, namespaces
    for _, fd in namespaces:
        os.close(fd)
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    while True:
        ready, _, _ = select.select([conn, pidfd], [], [])
        if pidfd in ready:
            _, status = os.waitpid(pid, 0)
            conn.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
            os._exit(0)
        message = _read_exact(conn, 4)
        if message is None:  # the client is gone: so is the rank
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os._exit(0)
        os.kill(pid, struct.unpack("!i", message)[0])


def become(request, fds, site_path, namespaces):
    """In the rank: take the client's streams and namespaces (an error says so on the client's
    stderr), environment, directory and arguments; run the script."""
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    _enter(namespaces)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    argv = list(request["argv"])
    python_path = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    try:
        _run(argv, python_path, site_path)
        status = 0
    except SystemExit as exc:
        status = _status_of(exc.code)
    except KeyboardInterrupt:  # Python ends by SIGINT then: leave the end to it
        raise
    except BaseException:
        sys.excepthook(*sys.exc_info())  # the traceback, as Python prints it
        status = 1
    _end_without_teardown(status)


def _run(argv, python_path, site_path):
    if argv[0] == "-m":  # as python -m: the working directory first, argv[0] the module's file
        sys.path[:] = [os.getcwd()] + python_path + site_path
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return
    sys.path[:] = [os.path.dirname(os.path.abspath(argv[0]))] + python_path + site_path
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")


def _status_of(code):
    """The exit status of ``sys.exit(code)``, printing a message as Python does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _end_without_teardown(status):
    """End the rank as Python ends an interpreter (the non-daemon threads joined, then every
    atexit handler: the script's, Horovod's shutdown, and those the server registered before
    the fork, logging's, multiprocessing's and weakref.finalize's among them), flush the
    streams and exit with ``status``, skipping the teardown of the modules that follows. With
    torch loaded that teardown takes about 1.1 s in a fork of the warm image (0.5-0.7 s in a
    fresh interpreter), 2.4 s when the 4 ranks of a job end together on 2 cores; a cold rank
    (HVD_HIER_TEST_WARM=0) still goes through it."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # (what the interpreter calls; errors are printed and ignored)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "serve":
        become(*serve(sys.argv[2]))
    else:
        sys.exit(f"usage: warm.py serve SOCKET | warm.py run SOCKET SCRIPT|-m MODULE [ARGS...], "
                 f"not {sys.argv[1:]}")
