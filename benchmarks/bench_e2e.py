"""One local and one global averaging of a model's parameters, end to end, under horovodrun.

    horovodrun -np 4 -H localhost:4 --gloo python benchmarks/bench_e2e.py [--model resnet50]

Local = groups of --group-size ranks (default 2), global = all ranks. Per kind of averaging,
interleaved round-robin in one run:

* fused       hvd_hier's BucketAverager: bucketed pack, hvd.allreduce_async_ (Sum) on the
              group's process set, unpack with 1/n, buckets overlapped;
* flat        hvd_hier with persistent flat storage (FlatAverager): the parameters are views
              into the buffers, which are reduced in place and scaled by 1/n;
* fused1, flat1  the same with one bucket in flight (what deterministic=True does): no two
              buckets can be fused by Horovod, so every sum is reproducible;
* grouped     hvd.grouped_allreduce_(params, op=hvd.Average, process_set=...);
* per_tensor  a loop of hvd.allreduce_(p, op=hvd.Average, process_set=...), one per tensor.

Rank 0 prints the median time per method (with min and max) and the ratios to the fused
path, as a table and as JSON. On one machine every rank talks over loopback: this measures
the software path around the network, not a network.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import MODELS, numel  # noqa: E402

import hvd_hier  # noqa: E402,F401  (before hvd.init: dynamic process sets)
import horovod.torch as hvd  # noqa: E402
from hvd_hier.reduce.buckets import BucketAverager  # noqa: E402
from hvd_hier.reduce.flat import FlatAverager  # noqa: E402
from hvd_hier.topology.process_sets import process_set_for  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50", choices=sorted(MODELS))
    p.add_argument("--group-size", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--bucket-cap-mb", type=float, default=25.0)
    p.add_argument("--methods", default="fused,fused1,flat,flat1,grouped,per_tensor",
                   help="comma-separated: fused plus any of fused1, flat, flat1, grouped, "
                        "per_tensor")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    hvd.init()
    torch.set_num_threads(1)
    rank, size = hvd.rank(), hvd.size()
    if size % args.group_size:
        raise SystemExit(f"--group-size {args.group_size} does not divide {size} ranks")
    groups = [list(range(i, i + args.group_size)) for i in range(0, size, args.group_size)]
    sets = [process_set_for(g) if 1 < len(g) < size else hvd.global_process_set for g in groups]
    local_set = sets[rank // args.group_size]
    kinds = {"local": (local_set, args.group_size), "global": (hvd.global_process_set, size)}

    g = torch.Generator().manual_seed(rank)
    params = [torch.randn(s, generator=g) for s in MODELS[args.model]]
    cap = int(args.bucket_cap_mb * 2**20)
    wanted = args.methods.split(",")
    averagers = {1: BucketAverager(params, cap, max_in_flight=1),
                 2: BucketAverager(params, cap, max_in_flight=2)}
    flat_averagers = {}
    for in_flight, name in ((2, "flat"), (1, "flat1")):
        if name in wanted:  # its own copy: flat storage re-points its tensors
            flat_averagers[in_flight] = FlatAverager([p.clone() for p in params], cap,
                                                     max_in_flight=in_flight)

    def fused(ps, n, kind):
        averagers[2].average(ps, n, kind)

    def fused1(ps, n, kind):
        averagers[1].average(ps, n, kind)

    def flat(ps, n, kind):
        flat_averagers[2].average(ps, n, kind)

    def flat1(ps, n, kind):
        flat_averagers[1].average(ps, n, kind)

    def grouped(ps, n, kind):
        hvd.grouped_allreduce_(params, op=hvd.Average, name=f"bench.grouped.{kind}", process_set=ps)

    def per_tensor(ps, n, kind):
        for i, t in enumerate(params):
            hvd.allreduce_(t, op=hvd.Average, name=f"bench.tensor.{kind}.{i}", process_set=ps)

    every = {"fused": fused, "fused1": fused1, "flat": flat, "flat1": flat1, "grouped": grouped,
             "per_tensor": per_tensor}
    unknown = set(wanted) - set(every)
    if unknown or "fused" not in wanted:
        raise SystemExit("--methods takes fused (always) plus fused1, flat, flat1, grouped and "
                         f"per_tensor, got {args.methods}")
    methods = {name: every[name] for name in wanted}
    times = {(k, m): [] for k in kinds for m in methods}
    for r in range(args.repeats + 1):
        for kind, (ps, n) in kinds.items():
            names = list(methods)
            names = names[r % len(names):] + names[:r % len(names)]
            for name in names:
                hvd.allreduce(torch.zeros(1), name="bench.barrier")
                t0 = time.perf_counter()
                methods[name](ps, n, kind)
                dt = time.perf_counter() - t0
                if r > 0:  # the first round sets up Horovod's buffers and process sets
                    times[(kind, name)].append(dt)

    # Every rank's time counts: the slowest rank is the averaging's time.
    table = {}
    for (kind, name), ts in times.items():
        worst = hvd.allreduce(torch.tensor(ts, dtype=torch.float64), op=hvd.Max,
                              name=f"bench.times.{kind}.{name}").tolist()
        table[(kind, name)] = worst
    if rank != 0:
        return
    mb = numel(MODELS[args.model]) * 4 / 1e6
    print(f"{args.model} float32, {mb:.1f} MB, {len(params)} tensors; {size} ranks, local groups "
          f"of {args.group_size}; median over {args.repeats} (slowest rank each time)")
    print(f"{'averaging':<10}{'method':<12}{'median ms':>11}{'min':>9}{'max':>9}{'vs fused':>10}")
    rows = []
    for kind in kinds:
        fused_ms = statistics.median(table[(kind, "fused")]) * 1e3
        for name in methods:
            ts = [t * 1e3 for t in table[(kind, name)]]
            med = statistics.median(ts)
            rows.append({"averaging": kind, "method": name, "median_ms": med, "min_ms": min(ts),
                         "max_ms": max(ts), "ratio_to_fused": med / fused_ms})
            print(f"{kind:<10}{name:<12}{med:>11.1f}{min(ts):>9.1f}{max(ts):>9.1f}{med / fused_ms:>9.2f}x")
    result = {"model": args.model, "MB": mb, "ranks": size, "group_size": args.group_size,
              "repeats": args.repeats, "rows": rows}
    print("JSON: " + json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
