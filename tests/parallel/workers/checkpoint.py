"""state_dict() carries the schedule: a run resumed from a checkpoint taken mid-cycle (or in
warmup) averages at the same steps and ends with the same parameters as an uninterrupted run,
whether every rank loads the checkpoint or rank 0 loads it and broadcasts."""

import copy
import io

import torch

import horovod.torch as hvd
import hvd_hier
from common import expect_warning, init, main, report

K1, K2, S, W = 2, 3, 2, 2
STEPS = 20


def make(rank, flat_storage=False):
    model = torch.nn.Linear(5, 3)
    with torch.no_grad():
        model.weight.copy_(torch.arange(15.0).reshape(3, 5) / 8 + rank)
        model.bias.fill_(rank / 4)
    opt = hvd_hier.DistributedOptimizer(
        torch.optim.SGD(model.parameters(), lr=1 / 64, momentum=0.5),
        named_parameters=model.named_parameters(), local_steps=K1, local_rounds=K2,
        group_size=S, warmup_steps=W, flat_storage=flat_storage)
    return model, opt


def step(model, opt, rank, t):
    x = torch.full((2, 5), (rank + 1) * (t % 4 + 1) / 16)
    opt.zero_grad()
    model(x).pow(2).sum().backward()
    opt.step()


def counts(opt):
    s = opt.averaging_stats()
    return {k: s[k] for k in ("steps", "sync_steps", "local_averages", "global_averages",
                              "bytes_local", "bytes_global")}


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def root_loads(rank, snapshot):
    """Horovod's pattern: rank 0 loads the checkpoint, then broadcasts it."""
    model, opt = make(rank)
    if rank == 0:
        model.load_state_dict(snapshot[0])
        opt.load_state_dict(copy.deepcopy(snapshot[1]))  # torch keeps the loaded tensors
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    return model, opt


def run():
    rank, size = init()

    model, opt = make(rank)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    full, snapshots = [], {}
    for t in range(1, STEPS + 1):
        step(model, opt, rank, t)
        full.append(params(model))
        snapshots[t] = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
    final_counts = counts(opt)

    # Every rank loads its own checkpoint (between global averagings the ranks' models and
    # momentum differ, so each must save its own). t=1: in warmup; t=7: u=5, in the middle of
    # a K1 cycle and of a K2 cycle; t=10: u=8, right after a local averaging.
    for save_at in (1, 7, 10):
        model, opt = make(rank)
        model.load_state_dict(snapshots[save_at][0])
        opt.load_state_dict(copy.deepcopy(snapshots[save_at][1]))  # torch keeps the tensors
        for t in range(save_at + 1, STEPS + 1):
            step(model, opt, rank, t)
            for i, (a, b) in enumerate(zip(params(model), full[t - 1])):
                assert torch.equal(a, b), f"resumed at {save_at}: step {t}, parameter {i} differs"
        assert counts(opt) == final_counts, (counts(opt), final_counts)
        report(f"resume at step {save_at}, every rank loads its own checkpoint")

    # Horovod's pattern: rank 0 loads, then broadcasts. The other ranks take the schedule
    # position from rank 0 at the first step. In warmup the models and momentum are the same
    # on every rank, so the resumed run is exact.
    model, opt = root_loads(rank, snapshots[1])
    for t in range(2, STEPS + 1):
        step(model, opt, rank, t)
        for i, (a, b) in enumerate(zip(params(model), full[t - 1])):
            assert torch.equal(a, b), f"rank 0 loaded step 1: step {t}, parameter {i} differs"
    assert opt.averaging_stats()["steps"] == STEPS
    # After warmup, rank 0's checkpoint moves every rank's schedule: averagings fall on the
    # same steps (t = 14 and 20 global).
    model, opt = root_loads(rank, snapshots[8])
    for t in range(9, STEPS + 1):
        step(model, opt, rank, t)
    stats = opt.averaging_stats()
    assert stats["steps"] == STEPS, stats
    schedule = hvd_hier.HierSchedule(K1, K2, W)
    assert stats["global_averages"] - (rank == 0) * snapshots[8][1]["hvd_hier"]["stats"][
        "global_averages"] == schedule.counts_through(STEPS)["global"] - schedule.counts_through(8)["global"]
    w = hvd.allgather(model.weight.detach()[None], name="checkpoint.final")
    assert all(torch.equal(w[0], w[i]) for i in range(size))
    report("rank 0 loads, the schedule follows on every rank")

    # A plain optimizer's state dict: a warning, and the schedule starts again at 0.
    model, opt = make(rank)
    plain = torch.optim.SGD(model.parameters(), lr=1 / 64, momentum=0.5)
    expect_warning("has no Hier-AVG schedule", opt.load_state_dict, plain.state_dict())
    assert opt.averaging_stats()["steps"] == 0
    sd = opt.state_dict()
    assert sd["hvd_hier"]["step"] == 0 and sd["hvd_hier"]["config"] == {
        "local_steps": K1, "local_rounds": K2, "warmup_steps": W, "group_size": S}
    # ... and the wrapped state dict loads into a plain optimizer.
    plain.load_state_dict(snapshots[7][1])
    assert plain.state_dict()["param_groups"][0]["lr"] == 1 / 64
    report("plain state dicts")

    # Flat storage: the same run with the parameters as views into the reduced buffers. The
    # buffers' layout differs from the packed buckets', and with it the order in which Gloo's
    # ring sums four ranks, so the run matches the packed one to rounding; the model's and
    # the optimizer's state dicts round-trip through torch.save, and a resume at t=7 ends
    # bit for bit where the uninterrupted flat run does.
    model, opt = make(rank, flat_storage=True)
    user_refs = list(model.parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    flat_full = []
    for t in range(1, STEPS + 1):
        step(model, opt, rank, t)
        flat_full.append(params(model))
        for i, (a, b) in enumerate(zip(flat_full[-1], full[t - 1])):
            assert torch.allclose(a, b, rtol=0, atol=1e-6), f"flat storage: step {t}, parameter {i}: {a} {b}"
        if t == 7:
            buffer = io.BytesIO()
            torch.save((model.state_dict(), opt.state_dict()), buffer)
    got = counts(opt)
    # the bias starts on a 64-byte boundary: 19 floats reduced per averaging instead of 18
    assert (got["bytes_local"], got["bytes_global"]) == (
        final_counts["bytes_local"] // 72 * 76, final_counts["bytes_global"] // 72 * 76), got
    assert {k: got[k] for k in got if not k.startswith("bytes")} == {
        k: final_counts[k] for k in got if not k.startswith("bytes")}
    assert [p is q for p, q in zip(user_refs, opt.param_groups[0]["params"])] == [True, True]
    w = hvd.allgather(model.weight.detach()[None], name="checkpoint.flat")
    assert all(torch.equal(w[0], w[i]) for i in range(size))  # t=20: a global averaging
    buffer.seek(0)
    saved_model, saved_opt = torch.load(buffer)
    model, opt = make(rank, flat_storage=True)
    model.load_state_dict(saved_model)
    opt.load_state_dict(saved_opt)
    for t in range(8, STEPS + 1):
        step(model, opt, rank, t)
        for i, (a, b) in enumerate(zip(params(model), flat_full[t - 1])):
            assert torch.equal(a, b), f"flat storage resumed at 7: step {t}, parameter {i} differs"
    storage = opt.hier_state().averager.buckets[0].storage.untyped_storage().data_ptr()
    assert {p.untyped_storage().data_ptr() for p in model.parameters()} == {storage}
    report("flat storage: same run, state dicts, resume")


if __name__ == "__main__":
    main(run)
