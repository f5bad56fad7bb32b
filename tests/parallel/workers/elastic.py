"""Elastic Horovod with hvd_hier: a worker killed, the job shrinks, a host comes back.

Run by tests/parallel/test_elastic.py under ``horovodrun --gloo -np 4 --min-np 2 --max-np 4
--host-discovery-script ...``, where the discovery script lists ``localhost:2`` always and
``127.0.0.1:2`` while the file ``<out>/host2`` exists (Horovod treats the two names of this
machine as two hosts).

    elastic.py OUT SCENARIO [GROUP_SIZE]    (GROUP_SIZE: "local", the default, an integer,
                                             or "levels": three levels, below)

Scenario ``kill_and_grow`` (plain SGD on a quadratic whose gradient depends on the model,
K1=2, K2=3, 2 warmup steps, a commit after every global averaging):

* 4 ranks on two hosts; at step 17 the second rank of ``127.0.0.1`` removes ``host2`` and
  kills itself with SIGKILL. The others fail in their next collective with it, restore the
  commit of step 14 and go on as 2 ranks on ``localhost``.
* At the commit of step 32 rank 0 creates ``host2`` again; the ranks wait for Horovod to
  announce the new host, and the job goes on as 4 ranks from step 32 to step 44.

With GROUP_SIZE "levels" the optimizer has three levels, ``[(2, 2), (4, 4), (12, "all")]``,
the upper two with outer optimizers (SGD with momentum, OUTERS), the outermost overlapped
with 3 steps, with 2 warmup steps (pairs every 2 steps, groups of 4 every 4, everyone every
12), the commits follow the outermost level (its reduction in flight: the commit waits for
it and saves its correction, due 3 steps later), the job grows back at the commit of step 26
and ends at step 50: on 2 ranks the rule fits the middle level's 4 to 2.

Scenario ``disagree`` (the discovery script lists ``localhost:1`` and ``127.0.0.1:1``, then
two slots on each once ``<out>/host2`` exists): 2 ranks; at the commit of step 8 a second slot
appears on each host, and the workers started there (local rank 1) construct the optimizer
with ``local_steps=3`` instead of 2. At the first step after the reset every rank raises the
same ValueError.

Each rank writes ``<out>/final_rank<r>.json``: its model, steps and groups, and for each
entry of its process into the training function the step it started from, the job's size
and the local groups. (Horovod may give either host the first ranks.)
"""

import functools
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

import hvd_hier  # noqa: F401  (before hvd.init(): dynamic process sets)
import horovod.torch as hvd
from reference import quadratic_problem

K1, K2, WARMUP, LR, DIM = 2, 3, 2, 0.1, 8
PERIOD = K1 * K2
STEPS, KILL_AT, GROW_AT = 44, 17, 32


class Quadratic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(-1.0, 1.0, DIM, dtype=torch.float64))

    def loss(self, rank, t):
        a, b = quadratic_problem(rank, t, DIM)
        return 0.5 * a * ((self.w - torch.from_numpy(b)) ** 2).sum()


def say(text):
    print(f"elastic rank {hvd.rank()}/{hvd.size()}: {text}", flush=True)


OUTERS = [None, dict(lr=0.9, momentum=0.5), dict(lr=0.8, momentum=0.7, nesterov=True)]
OVERLAP = 3  # the outermost level's reduction runs behind 3 steps
LEVELS = [(2, 2), hvd_hier.Level(4, 4, outer=functools.partial(torch.optim.SGD, **OUTERS[1])),
          hvd_hier.Level(12, "all", outer=functools.partial(torch.optim.SGD, **OUTERS[2]),
                         overlap_steps=OVERLAP)]


def run(out: Path, scenario: str, group_size):
    hvd.init()
    host = os.environ.get("HOROVOD_HOSTNAME", "")
    model = Quadratic()
    local_steps = 3 if scenario == "disagree" and hvd.local_rank() == 1 else K1
    if group_size == "levels":
        schedule = dict(levels=LEVELS)
        period, grow_at, steps = LEVELS[-1].period, 26, 50  # ends on an averaging of everyone
    else:
        schedule = dict(local_steps=local_steps, local_rounds=K2, group_size=group_size)
        period, grow_at, steps = PERIOD, GROW_AT, STEPS
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD(model.parameters(), lr=LR), named_parameters=model.named_parameters(),
        warmup_steps=WARMUP, stall_timeout_s=120, **schedule)
    assert opt.averaging_stats()["groups"] is None  # elastic: built at the first step
    state = hvd.elastic.TorchState(model=model, optimizer=opt, step=0)
    segments = []

    @hvd.elastic.run
    def train(state):
        segments.append({"step": state.step, "size": hvd.size(), "schedule": None})
        say(f"training from step {state.step}")
        while state.step < steps:
            t = state.step + 1
            if (scenario == "kill_and_grow" and t == KILL_AT and host == "127.0.0.1"
                    and hvd.local_rank() == 1 and not (out / "killed").exists()):
                (out / "killed").touch()
                (out / "host2").unlink()
                say(f"SIGKILL to myself before step {t}")
                os.kill(os.getpid(), signal.SIGKILL)
            opt.zero_grad()
            model.loss(hvd.rank(), t).backward()
            opt.step()
            state.step = t
            if segments[-1]["schedule"] is None:
                stats = opt.averaging_stats()
                segments[-1]["schedule"] = stats["steps"]
                segments[-1]["groups"] = stats["groups"]
                if group_size == "levels":
                    segments[-1]["level_groups"] = [lv["groups"] for lv in stats["levels"]]
            if t > WARMUP and (t - WARMUP) % period == 0:  # after a global averaging
                state.commit()
                grow = (scenario == "kill_and_grow" and t == grow_at) or (
                    scenario == "disagree" and t == 8)
                if grow and hvd.size() == 2:
                    if hvd.rank() == 0:
                        (out / "host2").touch()
                    say(f"waiting for a host to be added at step {t}")
                    deadline = time.monotonic() + 120
                    while time.monotonic() < deadline:
                        time.sleep(0.2)
                        state.check_host_updates()  # raises on every rank at once
                    raise RuntimeError("no host was added within 120 s")

    try:
        train(state)
    except ValueError as exc:
        if scenario != "disagree":
            raise
        say(f"ValueError: {exc}")
        # rank 0 is the first slot of a host; rank 1 its second slot, a worker that joined
        expected = ("hvd_hier.DistributedOptimizer: ranks disagree on local_steps: rank 0 has 2, "
                    "rank 1 has 3; every rank must pass the same arguments")
        assert str(exc) == expected, str(exc)
        assert state.step == 8 and hvd.size() == 4, (state.step, hvd.size())
        print("PASS elastic disagreement reported", flush=True)
        return
    stats = opt.averaging_stats()
    result = {"rank": hvd.rank(), "size": hvd.size(), "w": model.w.detach().tolist(),
              "steps": stats["steps"], "groups": stats["groups"]}
    result["segments"] = segments  # what this process saw (a worker added late: the last)
    (out / f"final_rank{hvd.rank()}.json").write_text(json.dumps(result))
    print("PASS elastic finished", flush=True)


if __name__ == "__main__":
    size_arg = sys.argv[3] if len(sys.argv) > 3 else "local"
    run(Path(sys.argv[1]), sys.argv[2], size_arg if size_arg in ("local", "levels") else int(size_arg))
