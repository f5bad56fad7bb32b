"""Start a job's ranks across the namespaces of a ``netns.Cluster``, as horovodrun would.

    python benchmarks/cluster/launch.py --nodes 2 --ranks-per-node 2 --rate 100mbit \\
        -- python my_train.py --epochs 1

creates the cluster, runs the command on every rank, and removes the cluster. horovodrun would
reach the other nodes by ssh; here each rank is started with ``ip netns exec`` instead, and
gets what horovodrun's Gloo launcher gives it:

* ``horovod`` backend: Horovod's HTTP rendezvous server runs inside node 0's namespace (a
  child process of this one), with the same host assignment horovodrun would make; each rank
  has ``HOROVOD_RANK/SIZE``, ``HOROVOD_LOCAL_RANK/SIZE``, ``HOROVOD_CROSS_RANK/SIZE``,
  ``HOROVOD_HOSTNAME`` (its namespace: hvd_hier's node-local groups follow it),
  ``HOROVOD_GLOO_RENDEZVOUS_ADDR/PORT``, ``HOROVOD_GLOO_IFACE`` (its node's uplink),
  ``HOROVOD_CONTROLLER=gloo`` and ``HOROVOD_CPU_OPERATIONS=gloo``;
* ``torch`` backend (``torch.distributed`` with Gloo): ``MASTER_ADDR`` (node 0),
  ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` and
  ``GLOO_SOCKET_IFNAME``.

Every rank also has ``HVDH_NODE`` and ``HVDH_IFACE`` (its node's uplink, whose byte counters
are in ``/sys/class/net/$HVDH_IFACE/statistics`` inside the namespace). Ranks are placed
node by node: ranks 0..L-1 on node 0, and so on. When a rank fails, the others are killed,
and the error names the rank and shows the end of its output (kept in ``--log-dir``).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netns import Cluster, raise_on_signals  # noqa: E402

__all__ = ["launch", "rank_env", "LaunchError"]

BACKENDS = ("horovod", "torch")


class LaunchError(RuntimeError):
    pass


def rank_env(cluster: Cluster, ranks_per_node: int, rank: int, backend: str,
             port: int) -> Dict[str, str]:
    """The environment of one rank (see the module doc)."""
    node, local = divmod(rank, ranks_per_node)
    size = cluster.nodes * ranks_per_node
    env = {"HVDH_NODE": str(node), "HVDH_IFACE": cluster.iface(node),
           "PYTHONUNBUFFERED": "1"}
    if backend == "horovod":
        env.update({
            "HOROVOD_RANK": str(rank), "HOROVOD_SIZE": str(size),
            "HOROVOD_LOCAL_RANK": str(local), "HOROVOD_LOCAL_SIZE": str(ranks_per_node),
            "HOROVOD_CROSS_RANK": str(node), "HOROVOD_CROSS_SIZE": str(cluster.nodes),
            "HOROVOD_HOSTNAME": cluster.namespace(node),
            "HOROVOD_GLOO_RENDEZVOUS_ADDR": cluster.address(0),
            "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
            "HOROVOD_GLOO_IFACE": cluster.iface(node),
            "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo",
        })
    elif backend == "torch":
        env.update({
            "MASTER_ADDR": cluster.address(0), "MASTER_PORT": str(port),
            "RANK": str(rank), "WORLD_SIZE": str(size),
            "LOCAL_RANK": str(local), "LOCAL_WORLD_SIZE": str(ranks_per_node),
            "GLOO_SOCKET_IFNAME": cluster.iface(node),
        })
    else:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return env


_SERVE = """
import sys
from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
from horovod.runner.http.http_server import RendezvousServer
hosts, np_ = sys.argv[1], int(sys.argv[2])
server = RendezvousServer(0)
port = server.start()
server.init(get_host_assignments(parse_hosts(hosts), np_))
print(port, flush=True)
sys.stdin.read()  # until the launcher closes our stdin
server.stop()
"""


def _start_rendezvous(cluster: Cluster, ranks_per_node: int):
    hosts = ",".join(f"{cluster.namespace(i)}:{ranks_per_node}" for i in range(cluster.nodes))
    proc = cluster.popen(0, [sys.executable, "-c", _SERVE, hosts,
                             str(cluster.nodes * ranks_per_node)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise LaunchError(f"Horovod's rendezvous server did not start in "
                          f"{cluster.namespace(0)} (got {line!r})")
    return proc, int(line)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return text[-chars:]


def launch(cluster: Cluster, ranks_per_node: int, argv: Sequence[str], backend: str = "horovod",
           env: Optional[Dict[str, str]] = None, timeout: float = 600.0,
           log_dir: Optional[str] = None, echo_rank0: bool = False) -> Path:
    """Run ``argv`` on every rank; wait for all. Returns the folder of the ranks' logs
    (``rank<r>.log``: stdout and stderr). Raises ``LaunchError`` when a rank fails or the job
    runs past ``timeout`` seconds (all ranks are killed first)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(ranks_per_node, int) or ranks_per_node < 1:
        raise ValueError(f"ranks_per_node must be an integer >= 1, got {ranks_per_node!r}")
    logs = Path(log_dir or tempfile.mkdtemp(prefix="hvdh-launch-"))
    logs.mkdir(parents=True, exist_ok=True)
    size = cluster.nodes * ranks_per_node
    server = None
    procs: List[subprocess.Popen] = []
    files = []
    try:
        if backend == "horovod":
            server, port = _start_rendezvous(cluster, ranks_per_node)
        else:
            port = random.Random(os.getpid() ^ time.time_ns()).randrange(20000, 40000)
        for rank in range(size):
            node = rank // ranks_per_node
            full_env = dict(os.environ, **(env or {}),
                            **rank_env(cluster, ranks_per_node, rank, backend, port))
            out = open(logs / f"rank{rank}.log", "w")
            files.append(out)
            procs.append(cluster.popen(node, list(argv), env=full_env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True))
        deadline = time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in procs]
            failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                r = failed[0]
                raise LaunchError(f"rank {r} (node {r // ranks_per_node}) exited with "
                                  f"{codes[r]}; the others were stopped. Its output:\n"
                                  f"{_tail(logs / f'rank{r}.log')}")
            if all(c == 0 for c in codes):
                break
            if time.monotonic() > deadline:
                running = [r for r, c in enumerate(codes) if c is None]
                raise LaunchError(f"timeout after {timeout:.0f} s: ranks {running} still "
                                  f"running, all stopped. Rank {running[0]}'s output:\n"
                                  f"{_tail(logs / f'rank{running[0]}.log')}")
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        for f in files:
            f.close()
        if server is not None:
            try:
                server.stdin.close()
                server.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                server.kill()
                server.wait()
    if echo_rank0:
        sys.stdout.write(_tail(logs / "rank0.log", 100000))
    return logs


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: launch.py [options] -- command ...")
    split = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--ranks-per-node", type=int, default=2)
    p.add_argument("--rate", default="1gbit", help="uplink rate per node (tc tbf)")
    p.add_argument("--backend", choices=BACKENDS, default="horovod")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--log-dir", default=None)
    p.add_argument("--prefix", default="hvdh", help="namespace names: <prefix>-n<i>")
    args = p.parse_args(argv[:split])
    raise_on_signals()
    with Cluster(args.nodes, args.rate, prefix=args.prefix) as cluster:
        launch(cluster, args.ranks_per_node, argv[split + 1:], args.backend,
               timeout=args.timeout, log_dir=args.log_dir, echo_rank0=True)


if __name__ == "__main__":
    try:
        main()
    except LaunchError as e:
        raise SystemExit(str(e))
