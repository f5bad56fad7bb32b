"""Train a small classifier with synchronous SGD, K-AVG or Hier-AVG under horovodrun.

    horovodrun -np 4 -H localhost:4 --gloo python examples/train.py --algo hier \
        --local-steps 2 --local-rounds 4 --group-size 2

Datasets: ``digits`` (scikit-learn's 8x8 handwritten digits, shipped inside the package: no
download) and ``synthetic`` (Gaussian blobs, for quick runs). Each rank trains on its own
shard of the training set. Test accuracy is measured every epoch on the model averaged over
all ranks (a copy: the training state is not touched), the same way for every algorithm.
"""

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

import hvd_hier  # before hvd.init(): enables the process sets of the local groups
import horovod.torch as hvd


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", choices=["sync", "kavg", "hier"], default="hier",
                   help="sync: hvd.DistributedOptimizer; kavg: hvd_hier with group size 1 "
                        "(K = K1*K2); hier: hvd_hier with --group-size")
    p.add_argument("--local-steps", "--k1", type=int, default=2, help="K1")
    p.add_argument("--local-rounds", "--k2", type=int, default=4, help="K2")
    p.add_argument("--group-size", default="local", help="S: an integer, or 'local' (per host)")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=16, help="per learner")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", choices=["digits", "synthetic"], default="digits")
    p.add_argument("--out", default=None, help="write the per-epoch results as JSON here")
    args = p.parse_args(argv)
    if args.group_size != "local":
        args.group_size = int(args.group_size)
    return args


def load_dataset(name, seed):
    """(x_train, y_train, x_test, y_test, classes) as tensors, the same on every rank."""
    rng = np.random.default_rng(seed)
    if name == "digits":
        from sklearn.datasets import load_digits

        data = load_digits()
        x = data.data.astype(np.float32) / 16.0
        y = data.target.astype(np.int64)
    else:
        classes, dim, n = 10, 32, 4000
        centres = rng.normal(size=(classes, dim)) * 1.5
        y = rng.integers(0, classes, size=n)
        x = (centres[y] + rng.normal(size=(n, dim)) * 2.0).astype(np.float32)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    cut = int(0.8 * len(y))
    t = torch.from_numpy
    return t(x[:cut]), t(y[:cut]), t(x[cut:]), t(y[cut:]), int(y.max()) + 1


def make_model(inputs, classes):
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, 64), torch.nn.ReLU(), torch.nn.Linear(64, classes))


def averaged_accuracy(model, x, y):
    """Accuracy of the model averaged over all ranks, on a copy of the parameters."""
    params = [p.detach().clone() for p in model.parameters()]
    averaged = hvd.grouped_allreduce(params, op=hvd.Average, name="eval.params")
    backup = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, a in zip(model.parameters(), averaged):
            p.copy_(a)
        acc = (model(x).argmax(1) == y).float().mean().item()
        for p, b in zip(model.parameters(), backup):
            p.copy_(b)
    return acc


def main(argv=None):
    args = parse_args(argv)
    hvd.init()
    torch.set_num_threads(1)
    rank, size = hvd.rank(), hvd.size()
    torch.manual_seed(args.seed)

    x_train, y_train, x_test, y_test, classes = load_dataset(args.dataset, args.seed)
    x_shard, y_shard = x_train[rank::size], y_train[rank::size]
    model = make_model(x_train.shape[1], classes)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)

    if args.algo == "sync":
        opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    else:
        opt = hvd_hier.DistributedOptimizer(
            opt, named_parameters=model.named_parameters(), local_steps=args.local_steps,
            local_rounds=args.local_rounds, warmup_steps=args.warmup_steps,
            group_size=1 if args.algo == "kavg" else args.group_size)
    hvd.broadcast_optimizer_state(opt, root_rank=0)

    # Every rank takes the same number of steps per epoch (the collectives must line up).
    steps_per_epoch = len(y_train) // size // args.batch_size
    if rank == 0:
        desc = args.algo if args.algo == "sync" else (
            f"{args.algo} K1={args.local_steps} K2={args.local_rounds} "
            f"S={'1' if args.algo == 'kavg' else args.group_size}")
        print(f"{args.dataset}: {len(y_train)} train / {len(y_test)} test, {size} learners, "
              f"{steps_per_epoch} steps per epoch; {desc}", flush=True)
    results = []
    start = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed * 1000 + rank)
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(y_shard), generator=g)
        total_loss = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(x_shard[idx]), y_shard[idx])
            loss.backward()
            opt.step()
            total_loss += loss.item()
        loss = hvd.allreduce(torch.tensor(total_loss / steps_per_epoch), name="eval.loss").item()
        acc = averaged_accuracy(model, x_test, y_test)
        stats = opt.averaging_stats() if hasattr(opt, "averaging_stats") else {}
        row = {"epoch": epoch, "train_loss": loss, "test_accuracy": acc,
               "seconds": time.perf_counter() - start,
               "local_averages": stats.get("local_averages", 0),
               "global_averages": stats.get("global_averages", steps_per_epoch * epoch),
               "bytes_local": stats.get("bytes_local", 0), "bytes_global": stats.get("bytes_global", 0)}
        results.append(row)
        if rank == 0:
            print(f"epoch {epoch:3d}  loss {loss:.4f}  test acc {acc:.4f}  "
                  f"time {row['seconds']:6.1f}s  averagings local {row['local_averages']:4d} "
                  f"global {row['global_averages']:4d}  bytes local {row['bytes_local']:>9d} "
                  f"global {row['bytes_global']:>9d}", flush=True)
    if rank == 0 and args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "size": size, "epochs": results,
                       "accuracy_measured_on": "model averaged over all ranks, each epoch end"},
                      f, indent=2)
    return results


if __name__ == "__main__":
    main()
