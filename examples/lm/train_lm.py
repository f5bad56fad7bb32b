"""Train the byte-level GPT of gpt.py on the standard-library corpus with one method.

    horovodrun -np 8 -H localhost:4,127.0.0.1:4 --gloo python examples/lm/train_lm.py \\
        --algo hier --local-steps 1 --local-rounds 8 --outer-lr 0.7 --steps 300
    torchrun --standalone --nproc-per-node 8 examples/lm/train_lm.py --algo torch \\
        --group-size 4 --local-steps 1 --local-rounds 8 --steps 300

The method flags are examples/train.py's (``--algo``, ``--local-steps``, ``--local-rounds``,
``--group-size``, ``--outer-lr``, ``--global-compression``, ``--overlap-steps`` ...), plus
``--algo torch`` (PyTorch's PostLocalSGDOptimizer with its HierarchicalModelAverager, over
``torch.distributed``; started by torchrun or the cluster's launcher). The inner optimizer
is AdamW (betas 0.9, 0.95, weight decay on the matrices) or SGD, with a linear warmup and a
cosine decay of the learning rate to ``--min-lr-ratio`` of it, and gradients clipped to
``--clip``.

Data: each step every rank reads ``--batch-size`` windows of the context's length at random
offsets of its data, drawn from (seed, rank, step) alone: the same for every method.
``--non-iid none`` reads the whole training split; ``learner`` gives each rank, ``node`` each
group of ``--group-size`` ranks, whole packages of its own (corpus.py). The initial model is
drawn from the seed on every rank.

Every ``--eval-every`` steps, and at the end, the model averaged over all ranks (a copy: the
training state is not touched) is scored on ``--eval-windows`` fixed windows of the validation
split, in bits per byte, each rank scoring its share; at the end also on ``--test-windows``
windows of the test split. ``--target-bpb`` stops the run at the first evaluation at or
below it. Rank 0 writes the JSON (``--out``): the arguments, the corpus's fingerprint, and a
row per evaluation with the steps, tokens, training time (evaluations excluded), averagings
and bytes so far; on the simulated cluster also the bytes each node's uplink carried while
training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import corpus as corpus_mod  # noqa: E402
import methods  # noqa: E402
from gpt import SIZES, count_parameters, decay_groups, make_gpt  # noqa: E402

NON_IID = ("none", "learner", "node")
LN2 = math.log(2.0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    methods.add_method_args(p, algos=methods.HVD_ALGOS + ("torch",))
    p.add_argument("--size", choices=list(SIZES), default="1m", help="the GPT's size (gpt.py)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=4, help="windows per rank and step")
    p.add_argument("--context", type=int, default=None,
                   help="bytes per window (default: the size's context)")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-warmup", type=int, default=30, help="steps of linear warmup")
    p.add_argument("--min-lr-ratio", type=float, default=0.1,
                   help="the cosine decay's end, as a fraction of --lr")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9, help="--optimizer sgd")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (0: none)")
    p.add_argument("--non-iid", choices=NON_IID, default="none")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-windows", type=int, default=256)
    p.add_argument("--test-windows", type=int, default=1024)
    p.add_argument("--target-bpb", type=float, default=None,
                   help="stop at the first evaluation at or below this validation loss")
    args = p.parse_args(argv)
    methods.check_method_args(p, args)
    for name in ("steps", "batch_size", "eval_every", "eval_windows", "test_windows"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.context is None:
        args.context = SIZES[args.size].context
    if not 2 <= args.context <= SIZES[args.size].context:
        p.error(f"--context must be in [2, {SIZES[args.size].context}] for --size {args.size}, "
                f"got {args.context}")
    if args.lr_warmup < 0:
        p.error(f"--lr-warmup must be >= 0, got {args.lr_warmup}")
    if not 0.0 <= args.min_lr_ratio <= 1.0:
        p.error(f"--min-lr-ratio must be in [0, 1], got {args.min_lr_ratio}")
    if args.algo == "torch" and (args.global_compression or args.overlap_steps
                                 or args.no_error_feedback or args.global_fragments > 1
                                 or args.outer_lr is not None or args.flat_storage
                                 or args.warmup_steps):
        p.error("--algo torch takes no --global-compression, --no-error-feedback, "
                "--global-fragments, --overlap-steps, --outer-lr, "
                "--flat-storage or --warmup-steps (hvd_hier's options)")
    return args


def learning_rate(args, step: int) -> float:
    """The learning rate of step ``step`` (from 1): linear warmup over --lr-warmup steps,
    then a cosine from --lr down to --min-lr-ratio of it at --steps."""
    if step <= args.lr_warmup:
        return args.lr * step / args.lr_warmup
    span = max(1, args.steps - args.lr_warmup)
    progress = min(1.0, (step - args.lr_warmup) / span)
    floor = args.min_lr_ratio * args.lr
    return floor + (args.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def training_data(corpus, args, rank: int, size: int, local_size: int) -> torch.Tensor:
    """The bytes rank ``rank`` reads (see --non-iid)."""
    if args.non_iid == "none":
        return corpus.split("train")
    if args.non_iid == "learner":
        return corpus.shards(size)[rank]
    s = methods.group_size(args.group_size, local_size)
    if s < 1 or size % s:
        raise SystemExit(f"--non-iid node: --group-size {args.group_size} does not divide "
                         f"{size} ranks")
    return corpus.shards(size // s)[rank // s]


def averaged_bpb(comm, model, windows: torch.Tensor, batch: int = 64) -> float:
    """Bits per byte of the model averaged over all ranks (parameters and floating-point
    buffers) on ``windows``, each rank scoring windows[rank::size]. The average is used
    through torch.func.functional_call: the training state is not touched."""
    state = model.state_dict()
    keys = [k for k, t in state.items() if t.is_floating_point()]
    state.update(zip(keys, comm.average([state[k] for k in keys], name="lm.eval.average")))
    mine = windows[comm.rank::comm.size]
    total = torch.zeros(2, dtype=torch.float64)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(mine), batch):
            w = mine[i:i + batch]
            logits = torch.func.functional_call(model, state, (w[:, :-1],))
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum")
            total += torch.tensor([loss.item(), w[:, 1:].numel()], dtype=torch.float64)
    model.train(was_training)
    total = comm.sum(total, name="lm.eval.sum")
    return float(total[0] / total[1]) / LN2


class LinkCounter:
    """Bytes this node's uplink sent and received while training (the simulated cluster's
    launcher names the interface in HVDH_IFACE; elsewhere nothing is counted)."""

    def __init__(self):
        iface = os.environ.get("HVDH_IFACE")
        self.base = Path("/sys/class/net") / iface / "statistics" if iface else None
        self.tx = self.rx = 0
        self._start = None

    def _read(self):
        return (int((self.base / "tx_bytes").read_text()),
                int((self.base / "rx_bytes").read_text()))

    def resume(self):
        if self.base is not None:
            self._start = self._read()

    def pause(self):
        if self.base is not None and self._start is not None:
            tx, rx = self._read()
            self.tx += tx - self._start[0]
            self.rx += rx - self._start[1]
            self._start = None


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    comm = methods.Comm("torch" if args.algo == "torch" else "horovod")
    corpus = corpus_mod.load()
    runs = []
    for seed in args.seeds:
        args.seed = seed
        runs.append(train(args, comm, corpus))
    comm.close()
    return runs[0] if len(runs) == 1 else runs


def train(args, comm, corpus):
    """One run with args.seed; returns its JSON summary (rank 0 also writes it)."""
    rank, size = comm.rank, comm.size
    torch.manual_seed(args.seed)  # the same initial model on every rank, for every method
    model = make_gpt(args.size)
    data = training_data(corpus, args, rank, size, comm.local_size)
    val = corpus_mod.eval_windows(corpus.split("val"), args.eval_windows, args.context)
    if args.optimizer == "adamw":
        base = torch.optim.AdamW(decay_groups(model, args.weight_decay), lr=args.lr,
                                 betas=(0.9, 0.95))
    else:
        base = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                               weight_decay=args.weight_decay)
    # No broadcast: every rank draws the same model from the seed, and the optimizer starts
    # empty everywhere (Horovod's broadcast_optimizer_state would take a step with zero
    # gradients, which AdamW's weight decay and step count do not ignore).
    opt = methods.make_optimizer(args, base, model, comm)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    tokens_per_step = args.batch_size * args.context * size
    ok, fingerprint = corpus.check()
    if rank == 0:
        print(f"GPT {args.size} ({count_parameters(model):,} parameters, "
              f"{param_bytes / 1e6:.2f} MB) "
              f"on {corpus.nbytes / 1e6:.2f} MB of standard-library bytes ({fingerprint}); "
              f"{size} learners, {tokens_per_step} tokens per step, non-IID {args.non_iid}; "
              f"{methods.describe(args)}", flush=True)
    progress = None
    if rank == 0 and not args.no_progress:
        from tqdm import tqdm
        progress = tqdm(total=args.steps, desc=f"{args.algo} seed {args.seed}", unit="step",
                        mininterval=2.0, file=sys.stderr)

    link, rows, seconds, loss_sum, loss_n = LinkCounter(), [], 0.0, 0.0, 0
    g = torch.Generator()
    model.train()

    def evaluate(step):
        nonlocal loss_sum, loss_n
        train_loss = comm.sum(torch.tensor([loss_sum, float(loss_n)], dtype=torch.float64),
                              name="lm.train.loss")
        row = {"eval": len(rows), "steps": step, "tokens": step * tokens_per_step,
               # the mean training loss since the last evaluation (None before any step)
               "train_bpb": float(train_loss[0] / train_loss[1]) / LN2 if train_loss[1] else None,
               "val_bpb": averaged_bpb(comm, model, val), "seconds": seconds,
               "steps_since_global": methods.schedule_position(args, step),
               **methods.averaging_counters(args, opt, step, param_bytes)}
        if link.base is not None:
            row.update(node_tx=link.tx, node_rx=link.rx)
        loss_sum, loss_n = 0.0, 0
        rows.append(row)
        if rank == 0:
            train = "   —  " if row["train_bpb"] is None else f"{row['train_bpb']:.4f}"
            line = (f"step {step:5d}  train {train}  val {row['val_bpb']:.4f} "
                    f"bits/byte  time {seconds:7.1f}s  averagings local "
                    f"{row['local_averages']:4d} global {row['global_averages']:4d}")
            (progress.write if progress is not None else print)(line)
        return row

    evaluate(0)
    step = 0
    while step < args.steps:
        link.resume()
        t0 = time.perf_counter()
        stop = min(args.steps, step + args.eval_every - step % args.eval_every)
        while step < stop:
            step += 1
            g.manual_seed((args.seed * 1009 + rank) * 1000003 + step)
            x, y = corpus_mod.sample_batch(data, args.batch_size, args.context, g)
            for group in opt.param_groups:
                group["lr"] = learning_rate(args, step)
            opt.zero_grad()
            loss = model.loss(x, y)
            loss.backward()
            clip_and_step(args, opt, model)
            loss_sum += loss.item()
            loss_n += 1
            if progress is not None:
                progress.update(1)
        seconds += time.perf_counter() - t0
        link.pause()
        row = evaluate(step)
        if args.target_bpb is not None and row["val_bpb"] <= args.target_bpb:
            break
    if progress is not None:
        progress.close()
    test = corpus_mod.eval_windows(corpus.split("test"), args.test_windows, args.context)
    summary = {
        "args": {k: v for k, v in vars(args).items() if k != "seeds"}, "size": size,
        "local_size": comm.local_size, "parameters": count_parameters(model),
        "parameter_bytes": param_bytes, "tokens_per_step": tokens_per_step,
        "corpus": {"sha256": corpus.sha256, "as_recorded": ok, "check": fingerprint,
                   "bytes": corpus.nbytes, "python": corpus_mod.python_name()},
        "evals": rows, "steps": step, "seconds": seconds,
        "test_bpb": averaged_bpb(comm, model, test),
        "measured_on": ("a copy of the model averaged over all ranks (parameters and "
                        "floating-point buffers); val_bpb on --eval-windows fixed windows of "
                        "the validation split, test_bpb on --test-windows of the test split; "
                        "seconds: training time without the evaluations"),
    }
    if rank == 0 and args.out:
        Path(args.out.replace("{seed}", str(args.seed))).write_text(json.dumps(summary, indent=1))
    return summary


def clip_and_step(args, opt, model):
    """Clip the gradient norm to --clip and step. Horovod's and hvd_hier's optimizers first
    finish their gradient reduction (synchronize), as Horovod's documentation does it."""
    if args.algo == "torch":
        if args.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        return
    opt.synchronize()
    if args.clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
    with opt.skip_synchronize():
        opt.step()


if __name__ == "__main__":
    main()
    methods.exit_now(0)
