"""A simulated cluster on one machine: network namespaces as nodes, a rate-limited link each.

    with Cluster(nodes=2, rate="100mbit") as cluster:
        cluster.run(0, ["python", "-c", "print('hello from node 0')"])
        cluster.set_rate("1gbit")

Topology: one namespace per node (``<prefix>-n<i>``) and one switch namespace
(``<prefix>-sw``) holding a bridge. Node i is joined to the bridge by a veth pair, ``hv<i>``
inside the node (address ``<subnet>.<i+1>/24``) and ``hv<i>s`` on the switch. Both ends of the
pair are shaped with ``tc tbf`` at the link rate, so each node has a full-duplex uplink of that
rate, as a NIC would. Ranks inside one node talk over that namespace's own stack (the local
route of its own addresses: loopback, unlimited).

Each node also looks like a host of its own: ranks run in a UTS namespace whose host name is
the node's namespace name, and ``/etc/netns/<name>/hosts`` (which ``ip netns exec`` mounts over
``/etc/hosts``) resolves that name to the node's address. Horovod 0.28.1 needs this: the Gloo
contexts of its process sets (the global one included) ignore ``HOROVOD_GLOO_IFACE`` and bind to
the address of the host name, which on a shared host name would be 127.0.0.1 for every node.

Nothing is attached to the host's own namespace or interfaces: traffic goes only between the
namespaces created here. ``Cluster.__exit__`` deletes them on every exit path (errors,
Ctrl-C and SIGTERM included: the caller turns the signals into exceptions with
``raise_on_signals``), and ``Cluster.__enter__`` first deletes any namespaces left with the same
prefix by a run that was killed outright, so a second run after a crash starts clean.
"""

from __future__ import annotations

import json
import os
import re
import signal
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

__all__ = ["Cluster", "ClusterError", "can_create_namespaces", "parse_rate", "raise_on_signals"]

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(k|m|g)?bit\s*$", re.IGNORECASE)
_UNIT = {None: 1, "k": 10**3, "m": 10**6, "g": 10**9}


class ClusterError(RuntimeError):
    """A namespace, link or shaping command failed (the message has its stderr)."""


def parse_rate(rate: str) -> Optional[int]:
    """``"100mbit"`` -> 100_000_000 bits/s; ``"unlimited"`` -> None."""
    if isinstance(rate, str) and rate.strip().lower() in ("unlimited", "none", "0"):
        return None
    m = _RATE.match(rate) if isinstance(rate, str) else None
    if not m:
        raise ValueError(f"rate must look like 100mbit, 1gbit, 500kbit or 'unlimited', "
                         f"got {rate!r}")
    bits = float(m.group(1)) * _UNIT[m.group(2) and m.group(2).lower()]
    if bits < 10**5:
        raise ValueError(f"rate must be at least 100kbit, got {rate!r}")
    return int(bits)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def can_create_namespaces() -> Optional[str]:
    """None where namespaces, veth pairs and tbf work here; otherwise why not (for a skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root (euid is %d)" % os.geteuid()
    for tool in ("ip", "tc"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            return f"'{tool}' (iproute2) is not installed"
    name = f"hvdh-probe-{os.getpid()}"
    proc = _ip("netns", "add", name, check=False)
    if proc.returncode != 0:
        return f"'ip netns add' failed: {proc.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


def raise_on_signals():
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so ``with Cluster(...)`` cleans up on
    them as it does on Ctrl-C; and make SIGINT raise it too even where the process started
    with SIGINT ignored (Python then leaves it ignored: any job started with ``&`` from a
    script, where a ``kill -INT`` would otherwise leave the namespaces behind)."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


class Cluster:
    """``nodes`` namespaces on a bridge, each uplink shaped to ``rate`` (see the module doc)."""

    def __init__(self, nodes: int = 2, rate: str = "1gbit", prefix: str = "hvdh",
                 subnet: str = "10.213.0"):
        if not isinstance(nodes, int) or isinstance(nodes, bool) or not 2 <= nodes <= 200:
            raise ValueError(f"nodes must be an integer in [2, 200], got {nodes!r}")
        if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", prefix):
            raise ValueError(f"prefix must be 1-8 lowercase letters or digits, got {prefix!r}")
        if not re.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,3}", subnet):
            raise ValueError(f"subnet must be the first three octets (e.g. 10.213.0), "
                             f"got {subnet!r}")
        parse_rate(rate)
        self.nodes, self.rate, self.prefix, self.subnet = nodes, rate, prefix, subnet
        self.switch = f"{prefix}-sw"
        self._up = False

    # -- names -----------------------------------------------------------------------------
    def namespace(self, node: int) -> str:
        return f"{self.prefix}-n{node}"

    def iface(self, node: int) -> str:
        return f"hv{node}"

    def address(self, node: int) -> str:
        return f"{self.subnet}.{node + 1}"

    def namespaces(self) -> List[str]:
        return [self.namespace(i) for i in range(self.nodes)] + [self.switch]

    # -- life cycle ------------------------------------------------------------------------
    def __enter__(self) -> "Cluster":
        self.remove_stale(self.prefix)
        try:
            self._create()
        except BaseException:
            self.teardown()
            raise
        self._up = True
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    @staticmethod
    def remove_stale(prefix: str) -> List[str]:
        """Delete every namespace named ``<prefix>-...`` (left by a killed run)."""
        listed = _ip("netns", "list", check=False).stdout.split("\n")
        stale = [line.split()[0] for line in listed
                 if line.strip() and line.split()[0].startswith(prefix + "-")]
        for name in stale:
            _ip("netns", "del", name, check=False)
        etc = Path("/etc/netns")
        if etc.is_dir():
            for d in etc.glob(prefix + "-*"):
                shutil.rmtree(d, ignore_errors=True)
        return stale

    def teardown(self) -> None:
        """Delete this cluster's namespaces (their veths and qdiscs go with them)."""
        for name in self.namespaces():
            _ip("netns", "del", name, check=False)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
        self._up = False

    def _create(self) -> None:
        for name in self.namespaces():
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i in range(self.nodes):
            ns, dev = self.namespace(i), self.iface(i)
            _ip("link", "add", dev, "netns", ns, "type", "veth", "peer", "name", dev + "s",
                "netns", self.switch)
            _ip("-n", self.switch, "link", "set", dev + "s", "master", "br0")
            _ip("-n", self.switch, "link", "set", dev + "s", "up")
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(
                "127.0.0.1 localhost\n::1 localhost\n" + "".join(
                    f"{self.address(j)} {self.namespace(j)}\n" for j in range(self.nodes)))
        self.set_rate(self.rate)

    # -- shaping and counters --------------------------------------------------------------
    def _links(self):
        for i in range(self.nodes):
            yield self.namespace(i), self.iface(i)        # node -> switch
            yield self.switch, self.iface(i) + "s"        # switch -> node

    def set_rate(self, rate: str) -> None:
        """Shape every uplink, both directions, to ``rate`` (``"unlimited"`` removes it).

        tbf's bucket holds 5 ms of traffic (at least 64 KiB), which is enough for the kernel's
        timer at 10 Gbit/s and small enough that the rate holds over a few milliseconds."""
        bits = parse_rate(rate)
        for ns, dev in self._links():
            _ip("netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root", check=False)
            if bits is not None:
                burst = max(64 * 1024, bits // 8 // 200)
                _ip("netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                    "rate", str(bits), "burst", str(burst), "latency", "50ms")
        self.rate = rate

    def counters(self) -> Dict[int, Dict[str, int]]:
        """Bytes and packets through each node's uplink so far: {node: {tx_bytes, ...}}."""
        out = {}
        for i in range(self.nodes):
            proc = _ip("-n", self.namespace(i), "-s", "-j", "link", "show", "dev", self.iface(i))
            stats = json.loads(proc.stdout)[0]["stats64"]
            out[i] = {"tx_bytes": stats["tx"]["bytes"], "rx_bytes": stats["rx"]["bytes"],
                      "tx_packets": stats["tx"]["packets"], "rx_packets": stats["rx"]["packets"]}
        return out

    # -- running things --------------------------------------------------------------------
    def prefix_cmd(self, node: int) -> List[str]:
        """Run in node's network namespace, with its host name (see the module doc)."""
        ns = self.namespace(node)
        return ["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', ns]

    def run(self, node: int, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix_cmd(node), *argv], **kwargs)

    def popen(self, node: int, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen([*self.prefix_cmd(node), *argv], **kwargs)

    def throughput(self, src: int, dst: int, nbytes: int = 32 << 20) -> float:
        """Bytes/s of one TCP stream from node ``src`` to node ``dst`` (the same node: over its
        own stack), measured by the receiver from its first byte to its last."""
        port = 29400 + src * 31 + dst
        server = self.popen(dst, [sys.executable, "-c", _RECEIVER, str(port)],
                            stdout=subprocess.PIPE, text=True)
        try:
            if server.stdout.readline().strip() != "ready":
                raise ClusterError("throughput: the receiver did not start")
            self.run(src, [sys.executable, "-c", _SENDER, self.address(dst), str(port),
                           str(nbytes)], check=True, capture_output=True)
            received, seconds = server.stdout.readline().split()
        finally:
            server.kill() if server.poll() is None else None
            server.wait()
        if int(received) != nbytes:
            raise ClusterError(f"throughput: received {received} of {nbytes} bytes")
        return nbytes / float(seconds)


_RECEIVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); print("ready", flush=True)
conn, _ = s.accept(); n = 0; buf = bytearray(1 << 20); t0 = None
while True:
    k = conn.recv_into(buf)
    if not k:
        break
    if t0 is None:
        t0 = time.perf_counter()
    n += k
print(n, time.perf_counter() - t0, flush=True)
"""

_SENDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
left, chunk = int(sys.argv[3]), b"\\0" * (1 << 20)
while left > 0:
    s.sendall(chunk[:min(left, len(chunk))]); left -= min(left, len(chunk))
s.close()
"""
