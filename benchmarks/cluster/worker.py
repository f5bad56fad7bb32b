"""One rank of the network benchmark: train a model on synthetic data with one method, time it.

Started by ``bench_network.py`` through ``launch.py`` (one namespace per node). Methods:

* ``compute``  no communication at all (the plain optimizer): the compute floor;
* ``sync``     ``hvd.DistributedOptimizer``: gradients averaged every step (Horovod's baseline);
* ``kavg``     ``hvd_hier.DistributedOptimizer`` with groups of one: K-AVG, a global average
               every K1*K2 steps;
* ``hier``     ``hvd_hier.DistributedOptimizer`` with node-local groups: Hier-AVG, a local
               average every K1 steps, a global one every K1*K2;
* ``torch``    PyTorch's ``PostLocalSGDOptimizer`` with a ``HierarchicalModelAverager``
               ({K1: ranks per node, K1*K2: all ranks}) over ``torch.distributed`` Gloo: the
               same schedule in the library a user would pick instead;
* ``raw_horovod``, ``raw_torch``  no training: one float32 tensor of the model's size reduced
               (Sum) within the node and across all ranks, ``--steps`` times each, by
               ``hvd.allreduce_`` on a process set or by ``torch.distributed.all_reduce`` on
               a subgroup: what each library's collective engine costs by itself.

``--warmup`` untimed steps first (allocations, first process-set use), then ``--steps`` timed
steps between two barriers. Rank 0 writes the JSON: per-step wall times, the time spent in
local and global averagings, the averagings done, the payload bytes of one averaging, and the
bytes each node's uplink sent and received during the timed steps (its interface counters,
read inside the node's namespace).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
from methods import (Comm, compression_arg, compression_of, exit_now,  # noqa: E402
                     schedule_kwargs, torch_averaging_optimizer)
from models import ResNet18  # noqa: E402

METHODS = ("compute", "sync", "kavg", "hier", "torch", "raw_horovod", "raw_torch")


def make_model(name: str) -> nn.Module:
    if name == "resnet18":
        return ResNet18(10, 3)
    if name == "tiny":  # the smoke test's model: 2 linear layers, 8,906 parameters
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 46), nn.ReLU(), nn.Linear(46, 10))
    raise ValueError(f"--model must be resnet18 or tiny, got {name!r}")


def iface_bytes():
    """(tx, rx) bytes of this node's uplink so far (inside its namespace)."""
    base = Path("/sys/class/net") / os.environ["HVDH_IFACE"] / "statistics"
    return int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text())


def build(args, comm, model):
    """The optimizer of ``args.method`` and a function that reads the averaging counters
    (local count, global count, seconds local, seconds global) after a step."""
    base = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    counters = {"local": 0, "global": 0, "seconds_local": 0.0, "seconds_global": 0.0,
                "bytes_global": 0}
    if args.method == "compute":
        return base, lambda opt: dict(counters)
    if args.method == "sync":
        hvd = comm.hvd
        opt = hvd.DistributedOptimizer(base, named_parameters=model.named_parameters())
        return opt, lambda opt: dict(counters)
    if args.method in ("kavg", "hier"):
        import hvd_hier
        schedule = schedule_kwargs(args.k1, args.k2, 1 if args.method == "kavg" else "local",
                                   compression_of(args.global_compression),
                                   overlap_steps=args.overlap_steps,
                                   fragments=args.global_fragments)
        opt = hvd_hier.DistributedOptimizer(base, named_parameters=model.named_parameters(),
                                            flat_storage=args.flat_storage, **schedule)

        def read(opt):
            s = opt.averaging_stats()
            return {"local": s["local_averages"] if args.method == "hier" else 0,
                    "global": s["global_averages"], "seconds_local": s["seconds_local"],
                    "seconds_global": s["seconds_global"], "bytes_global": s["bytes_global"]}
        return opt, read
    # torch: PostLocalSGDOptimizer + HierarchicalModelAverager, the same groups and periods
    opt, averaged = torch_averaging_optimizer(base, args.k1, args.k2, comm.local_size, comm.size)
    return opt, lambda opt: dict(counters, **averaged)


def raw_collectives(args, comm, model):
    """Time one allreduce of the model's size, local then global, ``args.steps`` times each."""
    n = sum(p.numel() for p in model.parameters())
    t = torch.ones(n)
    node = comm.rank // comm.local_size
    if comm.backend == "horovod":
        hvd = comm.hvd
        from hvd_hier.topology.process_sets import process_set_for
        sets = [process_set_for(list(range(i, i + comm.local_size)))
                for i in range(0, comm.size, comm.local_size)]

        def reduce(kind, i):
            ps = sets[node] if kind == "local" else hvd.global_process_set
            hvd.allreduce_(t, op=hvd.Sum, name=f"raw.{kind}.{i % 2}", process_set=ps)
    else:
        dist = comm.dist
        local, _ = dist.new_subgroups(comm.local_size)

        def reduce(kind, i):
            dist.all_reduce(t, group=local if kind == "local" else None)
    times = {"local": [], "global": []}
    for kind in ("local", "global"):
        for i in range(args.steps + 1):  # the first is a warmup
            comm.barrier()
            start = time.perf_counter()
            reduce(kind, i)
            if i:
                times[kind].append(time.perf_counter() - start)
    return n * 4, times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--k1", type=int, default=1)
    p.add_argument("--k2", type=int, default=8)
    p.add_argument("--steps", type=int, default=32, help="timed steps")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps before (default: one period K1*K2, at least 2)")
    p.add_argument("--model", default="resnet18", choices=["resnet18", "tiny"])
    p.add_argument("--image-size", type=int, default=8,
                   help="side of the synthetic images (the parameters do not depend on it)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--flat-storage", action="store_true")
    p.add_argument("--global-compression", type=compression_arg, default=None,
                   help="kavg, hier: the global level's deltas in this encoding (fp16, bf16, "
                        "int8, int4, int2, topk<fraction>_<int8|int4|int2>)")
    p.add_argument("--global-fragments", type=int, default=1,
                   help="kavg, hier: the global level reduced in this many fragments")
    p.add_argument("--overlap-steps", type=int, default=0,
                   help="kavg, hier: the global reduction overlapped with this many steps")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)

    comm = Comm("torch" if args.method in ("torch", "raw_torch") else "horovod")
    torch.manual_seed(0)  # the same initial model on every rank, no broadcast needed
    model = make_model(args.model)
    if args.method.startswith("raw_"):
        nbytes, times = raw_collectives(args, comm, model)
        if comm.rank == 0:
            Path(args.out).write_text(json.dumps({
                "method": args.method, "size": comm.size, "ranks_per_node": comm.local_size,
                "model": args.model, "bytes": nbytes, "steps": args.steps,
                "local_seconds": times["local"], "global_seconds": times["global"]}, indent=1))
        comm.close()
        return
    opt, read = build(args, comm, model)
    g = torch.Generator().manual_seed(1000 + comm.rank)
    side = args.image_size
    batches = [(torch.randn(args.batch_size, 3, side, side, generator=g),
                torch.randint(0, 10, (args.batch_size,), generator=g)) for _ in range(4)]
    loss_fn = nn.CrossEntropyLoss()

    def step(i):
        x, y = batches[i % len(batches)]
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    warmup = args.warmup if args.warmup is not None else max(2, args.k1 * args.k2)
    for i in range(warmup):
        step(i)
    comm.barrier()
    before_bytes, before = iface_bytes(), read(opt)
    times, kinds, sent = [], [], [before_bytes[0]]
    t_start = time.perf_counter()
    for i in range(args.steps):
        c0 = read(opt)
        t0 = time.perf_counter()
        step(warmup + i)
        times.append(time.perf_counter() - t0)
        sent.append(iface_bytes()[0])  # the node's uplink after each of this rank's steps
        c1 = read(opt)
        kinds.append("global" if c1["global"] > c0["global"] else
                     "local" if c1["local"] > c0["local"] else "none")
    comm.barrier()
    total = time.perf_counter() - t_start
    after_bytes, after = iface_bytes(), read(opt)
    payload = 4 * sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    params = 4 * sum(p.numel() for p in model.parameters())
    mine = {"rank": comm.rank, "node": int(os.environ["HVDH_NODE"]),
            "tx": after_bytes[0] - before_bytes[0], "rx": after_bytes[1] - before_bytes[1],
            "times": times, "total": total,
            "peak_step_tx": max(b - a for a, b in zip(sent, sent[1:])),
            **{k: after[k] - before[k] for k in after}}
    everyone = comm.gather(mine)
    if comm.rank == 0:
        nodes = {}
        for r in everyone:  # every rank of a node reads the same counters: take one per node
            nodes.setdefault(r["node"], {"tx": r["tx"], "rx": r["rx"]})
        result = {
            "method": args.method, "k1": args.k1, "k2": args.k2, "size": comm.size,
            "ranks_per_node": comm.local_size, "nodes": len(nodes), "steps": args.steps,
            "warmup": warmup, "model": args.model, "image_size": side,
            "batch_size": args.batch_size, "flat_storage": args.flat_storage,
            "compression": args.global_compression, "overlap_steps": args.overlap_steps,
            "fragments": args.global_fragments,
            # the global level's whole encoded model (E), for compressed runs (fragments: the
            # sum of theirs)
            "encoded_bytes": (sum(p.reducer.nbytes for p in getattr(
                opt.hier_state().levels[-1], "parts", [opt.hier_state().levels[-1]]))
                if args.global_compression else None),
            # the most one node's uplink sent during one step (as its ranks saw it)
            "peak_step_tx": max(r["peak_step_tx"] for r in everyone),
            "global_bytes_per_average": (after["bytes_global"] - before["bytes_global"])
            / max(1, after["global"] - before["global"]),
            "params_bytes": params, "payload_bytes": payload,
            "total_seconds": max(r["total"] for r in everyone),
            "step_seconds": times, "step_kinds": kinds,
            "seconds_local": max(r["seconds_local"] for r in everyone),
            "seconds_global": max(r["seconds_global"] for r in everyone),
            # the rank that waited least in its averagings: the slowest one, which sets the
            # pace (the others' averagings also hold their wait for it)
            "seconds_local_min": min(r["seconds_local"] for r in everyone),
            "seconds_global_min": min(r["seconds_global"] for r in everyone),
            "local_averages": after["local"] - before["local"],
            "global_averages": after["global"] - before["global"],
            "node_bytes": {str(n): v for n, v in sorted(nodes.items())},
        }
        Path(args.out).write_text(json.dumps(result, indent=1))
    comm.close()


if __name__ == "__main__":
    main()
    # the results are written: skip torch.distributed's Gloo destructors, which can abort
    # a rank at exit ("terminate called without an active exception", seen in CI)
    exit_now(0)
