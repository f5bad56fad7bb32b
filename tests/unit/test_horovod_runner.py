"""horovodrun's own Python code as our build patches it (scripts/patches/), in this process:

- the elastic driver (horovod-0.28.1-exit-of-a-replaced-worker.patch): the exit of a worker
  whose slot left the host assignments (its host removed or blacklisted) is not recorded
  against the worker started in that slot when the host comes back. The driver runs with a
  discovery, a rendezvous and workers that the test controls; no process is started.
- the rendezvous server (horovod-0.28.1-rendezvous-backlog.patch) listens with a backlog that
  many ranks polling at once do not overflow.
"""

import shutil
import subprocess
import threading
import time

import pytest

driver_module = pytest.importorskip("horovod.runner.elastic.driver")
from horovod.runner.elastic.discovery import DiscoveredHosts, HostDiscovery  # noqa: E402
from horovod.runner.elastic.registration import FAILURE  # noqa: E402
from horovod.runner.http.http_server import RendezvousServer  # noqa: E402

TWO_HOSTS = DiscoveredHosts({"a": 2, "b": 2}, ["a", "b"])
ONE_HOST = DiscoveredHosts({"a": 2}, ["a"])


class Discovery(HostDiscovery):
    def find_available_hosts_and_slots(self):
        return {"a": 2, "b": 2}


class Rendezvous:
    def init(self, assignments):
        pass

    def stop(self):
        pass


class Workers:
    """Each worker waits until the test gives it an exit code."""

    def __init__(self):
        self.started = []  # (host, local_rank, exit code box, its event)

    def __call__(self, slot_info, events):
        box, done = [], threading.Event()
        self.started.append((slot_info.hostname, slot_info.local_rank, box, done))
        done.wait(30)
        return box[0] if box else 1, time.time()

    def exit(self, index, code):
        _, _, box, done = self.started[index]
        box.append(code)
        done.set()


def wait_for(predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def activate(driver, hosts):
    """What the driver does at a reset, with the hosts given: assign, reset the registry and
    start workers in the slots that were not assigned before."""
    pending = driver._update_host_assignments(hosts)
    driver._worker_registry.reset(driver.world_size())
    driver._start_worker_processes(pending)


@pytest.fixture
def driver():
    d = driver_module.ElasticDriver(Rendezvous(), Discovery(), min_num_proc=2, max_num_proc=4)
    d._create_worker_fn = Workers()
    yield d
    workers = d._create_worker_fn
    for i, (_, _, _, done) in enumerate(workers.started):  # the others succeed: the job stops
        if not done.is_set():
            workers.exit(i, 0)
    for thread in list(d._results._worker_threads.queue):
        thread.join(10)
    d.stop()


def test_a_worker_of_a_host_that_left_and_came_back_exits_without_failing_the_new_one(driver):
    workers = driver._create_worker_fn
    activate(driver, TWO_HOSTS)
    assert [(h, s) for h, s, _, _ in workers.started] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    activate(driver, ONE_HOST)  # host b removed: its workers are on their way out
    activate(driver, TWO_HOSTS)  # and back, with new workers in its slots
    assert [(h, s) for h, s, _, _ in workers.started[4:]] == [("b", 0), ("b", 1)]
    states = driver._worker_registry._states

    threads = list(driver._results._worker_threads.queue)  # in the order started

    workers.exit(2, 137)  # the old worker of b[0] is killed only now
    threads[2].join(10)
    # (a recorded exit would wait at the registry's barrier for the other three workers)
    assert not threads[2].is_alive() and ("b", 0) not in states, states

    workers.exit(4, 1)  # the new worker of b[0] fails: that is recorded
    assert wait_for(lambda: states.get(("b", 0)) == FAILURE), states


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the backlog")
def test_the_rendezvous_server_listens_with_a_backlog_of_1024():
    server = RendezvousServer()
    port = server.start()
    try:
        # for a listening socket, ss shows the backlog as Send-Q
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                             text=True, check=True).stdout.split()
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
        assert int(out[2]) == min(1024, somaxconn), out
    finally:
        server.stop()
