"""Overlapped reductions: a level with ``overlap_steps=D`` reduces behind the next D steps.

At a step t where such a level reduces, the level below it first averages within its own
groups (as if it were due; for the innermost level each rank is its own group), which leaves
every rank with a snapshot s of the averaged tensors, the same on every rank of the group
below. s is copied into buffers of the level's own, the non-finite check runs on it, and its
reduction over the level's group (plain, compressed and with the outer optimizer, as the
level says) runs while training goes on. At the end of step t + D,
after that step's update and its own averaging (if any), every rank adds the correction
c = r − s to its parameters and buffers, where r is the level's result: the group's mean, or
the outer optimizer's new anchor. It adds c to the anchors of the levels below as well, so
they stand where the non-overlapped reduction would have put them, with the progress made
since. c is the same on every rank of the group below, so it commutes with their averagings
in between. A rank whose values were left out (``nonfinite="skip"``) takes r instead.

How it runs behind training: Horovod performs its collectives one at a time on its own
background thread, so a reduction submitted whole would hold back every other collective
(the level below's averagings) until it ended; and Horovod does not take collectives from two
threads of a rank safely (seen here: ranks stall in Gloo). So the reduction is cut into
pieces of about ``CHUNK_BYTES`` on the wire (a compressed level: one bucket's alltoall and
allgather), and ``step()`` itself moves them on at each call, on the training thread: it
collects the pieces that have finished, and after the step's own averaging submits the next
batch, sized from the last interval (one more when the link went idle before the step
ended, else the number that finished), so that the link stays busy during the computation
and a lower level's averaging waits behind few pieces.

Memory: one copy of the averaged tensors per overlapped level, kept between reductions
(the snapshot, which becomes the correction); a level with ``outer`` and no compression
keeps a second one (its mean), a compressed level the encoded deltas and means, and a
compressed level with the outer optimizer a second copy while the reduction finishes.

Checkpoints: ``state_dict()`` waits for the reductions in flight, so that it can save their
corrections (each with the step it is due at) and the anchors and outer state they moved; a
resumed run adds them at the same steps, bit for bit. An elastic reset discards the
reductions still running (they belonged to the job before the reset) and takes rank 0's
saved corrections, together with rank 0's model; ``load_state_dict`` finishes the running
ones first (the other ranks take part in them), then replaces them with the checkpoint's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

import horovod.torch as hvd

from .collectives import wait
from .pieces import CHUNK_BYTES, Copy, Pipeline, allreduce
from .reduction import average_level, finite_divisor, level_name, relink
from .state import HierState

__all__ = ["InFlight", "start", "settle", "staged", "add", "due", "progress", "discard",
           "portable", "restore"]

@dataclass
class InFlight:
    """One overlapped reduction on this rank: started at step ``start``, added at ``due``."""

    level: int
    start: int
    due: int
    dropped: bool = False  #: it takes r, not x + c (its values were left out, or D = 0)
    pipeline: Optional["Pipeline"] = None  #: the pieces still to run (None: none)
    scale: float = 1.0  #: the sums' factor: 1 / divisor (two stages: S / divisor)
    means: Optional[List[torch.Tensor]] = None  #: compressed: the encoded means
    items: Optional[list] = None  #: what the pieces reduce (chunks, or the means)
    owned: Optional[List[int]] = None  #: the pieces this rank reduces
    correction: Optional[List[torch.Tensor]] = None  #: c = r − s (or r), once finished

    @property
    def running(self) -> bool:
        return self.correction is None


@dataclass
class _LevelCopies:
    snapshot: Copy  #: s, then (plain levels) the correction
    result: Optional[Copy] = None  #: r (levels with an anchor)
    #: pooled piece buffers per (device, dtype)
    staging: Dict[tuple, List[torch.Tensor]] = field(default_factory=dict)


def _copies(h: HierState, level: int, with_result: bool) -> _LevelCopies:
    found = h.overlap_copies.get(level)
    if found is None:
        found = h.overlap_copies[level] = _LevelCopies(Copy(h.averager.tensors))
    if with_result and found.result is None:
        found.result = Copy(h.averager.tensors)
    return found


def _nonempty(views, tensors):
    pairs = [(v, t) for v, t in zip(views, tensors) if t.numel()]
    return [v for v, _ in pairs], [t.detach() for _, t in pairs]


def staged(h: HierState, level: int) -> bool:
    """Whether level ``level`` reduces through this module: overlapped, or in two stages
    (its topology has cross groups)."""
    return bool(h.config.levels[level].options.get("overlap_steps")) or \
        h.topology.levels[level].cross_set is not None


def start(h: HierState, level: int, t: int, deadline: Optional[float]) -> Optional[InFlight]:
    """Level ``level``'s reduction at step ``t`` through this module (see ``staged``).

    Overlapped (D >= 1): the level below averages, the snapshot is taken and checked, and the
    first pieces are submitted; the reduction is returned, in flight. Not overlapped (a
    two-stage level): after the check, the level below's groups take their plain mean, each
    rank reduces its share of the pieces across its cross group, the group below gathers
    the shares, and the tensors take the result now (returns None).

    In two stages every rank of a group below holds the same values when its share is
    reduced, so a rank sends 1/S of the model across the link: a node's uplink carries
    2(N − 1)/N of the model (N groups below) instead of 2(P − 1)/P of it.
    """
    began = time.perf_counter()
    lt = h.topology.levels[level]
    d = h.config.levels[level].options.get("overlap_steps", 0)
    two_stage = lt.cross_set is not None
    anchor = h.anchors[level]
    compressed = anchor is not None and anchor.reducer is not None and len(lt.group) > 1
    red = InFlight(level, t, t + d)
    divisor, tag = len(lt.group), f"{level_name(h.config, level).replace(' ', '')}.staged"
    if d:
        if level > 0:
            average_level(h, level - 1, t, deadline)
        relink(h)
    else:  # the check on the tensors themselves, then the plain mean of each group below
        relink(h)
        divisor, red.dropped = finite_divisor(h, level, t, deadline)
        lower = h.topology.levels[level - 1]
        h.averager.average(lower.process_set, len(lower.group), f"{tag}.lower", deadline)
    copies = _copies(h, level, with_result=(anchor is not None and d > 0) or compressed)
    snap = copies.snapshot
    views, tensors = _nonempty(snap.views, h.averager.tensors)
    with torch.no_grad():
        torch._foreach_copy_(views, tensors)
    if d and len(lt.group) > 1:
        divisor, red.dropped = finite_divisor(h, level, t, deadline, snap.views)
    red.scale = (lt.shares if two_stage else 1) / divisor
    # the counters: the payload of the level, as a reduction in one stage counts it (in two
    # stages each rank sends about 1/S of it across the cross groups)
    pieces, moved = [], 0
    if compressed:
        pieces, moved = _compressed_pieces(red, anchor.reducer, snap, lt, tag), \
            anchor.reducer.nbytes
    elif len(lt.group) > 1:
        # the sums go into: a copy of s beside it (an anchor needs both), or s itself, which
        # becomes the mean (no overlap), or mean − s (overlapped, no anchor)
        into = copies.result if anchor is not None and d else snap
        pieces, moved = _plain_pieces(red, copies, into, correct=(anchor is None and d > 0),
                                      lt=lt, tag=tag), h.averager.nbytes
    if pieces:
        # deterministic: one piece at a time, so that Horovod never fuses two (a ring of 3 or
        # more ranks would then add in another order)
        red.pipeline = Pipeline(pieces, most=1 if h.config.deterministic else 64)
        red.pipeline.pump(submit=True)
    stats = h.stats.levels[level]
    stats.add(moved, time.perf_counter() - began)
    if d:
        h.in_flight.append(red)
        return red
    finish(h, red, deadline)  # (counts its own time)
    began = time.perf_counter()
    _shift(h, red, red.correction)
    for below in h.anchors[:level]:  # the levels below start again from this model
        if below is not None:
            below.take()
    stats.seconds += time.perf_counter() - began
    return None


def _owned(n: int, lt) -> List[int]:
    """The pieces this rank reduces: all, or in two stages every S-th from its position."""
    return list(range(lt.share, n, lt.shares)) if lt.cross_set is not None else list(range(n))


def _reducing(lt):
    """(process set, members) of the pieces' collectives: the cross group, or the group."""
    if lt.cross_set is not None:
        return lt.cross_set, lt.cross_group
    return lt.process_set, lt.group


def _plain_pieces(red: InFlight, copies: _LevelCopies, into: Copy, correct: bool, lt, tag: str):
    """The pieces of a plain (uncompressed) reduction over this rank's share of the chunks.
    ``correct``: the snapshot becomes mean − s piece by piece through a staging buffer;
    else ``into`` (the snapshot itself, or the result copy, first filled with s) is summed in
    place and scaled into the mean."""
    snap, scale = copies.snapshot, red.scale
    if into is not snap:
        with torch.no_grad():
            for a, b in zip(into.storages, snap.storages):
                a.copy_(b)
    targets, sources = into.chunks(), snap.chunks()
    owned = _owned(len(sources), lt)
    red.items, red.owned = targets, owned
    process_set, _ = _reducing(lt)

    # (no torch.no_grad() across a yield: it would stay entered in the caller; these
    # buffers are the optimizer's own and need none)
    def piece(i):
        name = f"hvd_hier.{tag}.{i}"
        if not correct:
            yield allreduce(targets[i], name, process_set)
            targets[i].mul_(scale)
            return
        src = sources[i]
        pool = copies.staging.setdefault((src.device, src.dtype), [])
        buf = pool.pop() if pool else torch.empty(
            max(1, CHUNK_BYTES // src.element_size()), dtype=src.dtype, device=src.device)
        staged_piece = buf[:src.numel()]
        staged_piece.copy_(src)
        yield allreduce(staged_piece, name, process_set)
        staged_piece.mul_(scale)
        src.neg_()
        src.add_(staged_piece)
        pool.append(buf)

    return [lambda i=i: piece(i) for i in owned]


def _compressed_pieces(red: InFlight, reducer, snap: Copy, lt, tag: str):
    """The pieces of a compressed reduction, one per bucket of this rank's share: its delta
    is encoded now; the piece runs the alltoall, reduces this rank's shard and allgathers
    the mean."""
    owned = _owned(len(reducer.buckets), lt)
    encoded = {i: reducer.encode(i, snap.views) for i in owned}
    red.means = [None] * len(reducer.buckets)
    red.items, red.owned = red.means, owned
    process_set, members = _reducing(lt)
    rank = hvd.rank()

    def piece(i):
        splits, handle = reducer.start_exchange(i, encoded[i], process_set, members, tag)
        received = yield handle, reducer.exchange.wait
        mine = reducer.reduce_shard(received, splits, members, rank, red.scale)
        red.means[i] = yield reducer.start_gather(i, mine, process_set, tag), \
            reducer.exchange.wait

    return [lambda i=i: piece(i) for i in owned]


def _gather_shares(h: HierState, red: InFlight, deadline: Optional[float]) -> None:
    """Two stages: every rank of the group below receives the others' reduced pieces
    (``red.items``: chunks of a copy, or the encoded means), in one allgather of bytes."""
    lt = h.topology.levels[red.level]
    lower = h.topology.levels[red.level - 1]
    n, shares = len(red.items), lt.shares
    if red.means is not None:
        sizes = h.anchors[red.level].reducer.encoded_sizes
    else:
        sizes = [c.numel() * c.element_size() for c in red.items]
    # (a rank that owns no piece sends nothing, from the device of the copies)
    device = h.overlap_copies[red.level].snapshot.storages[0].device
    with torch.no_grad():
        mine = [red.items[i].reshape(-1).view(torch.uint8) for i in red.owned]
        payload = torch.cat(mine) if mine else torch.empty(0, dtype=torch.uint8, device=device)
        got = wait(hvd.allgather_async(payload, name=f"hvd_hier.{red.level}.shares",
                                       process_set=lower.process_set), deadline)
        offset = 0
        for j in range(shares):
            for i in range(j, n, shares):
                size = sizes[i]
                part = got[offset:offset + size]
                offset += size
                if j == lt.share:
                    continue
                if red.means is not None:
                    red.means[i] = part.clone()
                else:
                    red.items[i].reshape(-1).view(torch.uint8).copy_(part)


def progress(h: HierState, submit: bool) -> None:
    """At a step boundary: move every running reduction on (see ``Pipeline.pump``)."""
    for red in h.in_flight:
        if red.pipeline is not None:
            began = time.perf_counter()
            red.pipeline.pump(submit)
            h.stats.levels[red.level].seconds += time.perf_counter() - began


def finish(h: HierState, red: InFlight, deadline: Optional[float]) -> None:
    """Wait for ``red``'s reduction (``StallError`` past ``deadline``) and compute its
    correction (for a reduction that is not overlapped: the result itself); the level's
    anchor and outer optimizer move now."""
    if not red.running:
        return
    began = time.perf_counter()
    if red.pipeline is not None:
        red.pipeline.drain(deadline)
        red.pipeline = None
    lt = h.topology.levels[red.level]
    if lt.cross_set is not None and red.items is not None:
        _gather_shares(h, red, deadline)
    copies = h.overlap_copies[red.level]
    snap, anchor = copies.snapshot, h.anchors[red.level]
    overlapped = red.due > red.start
    with torch.no_grad():
        if anchor is None:
            if len(lt.group) == 1:  # its own mean: no correction
                for s in snap.storages:
                    s.zero_()
            red.correction = snap.views  # mean − s, or (not overlapped) the mean
        else:
            compressed = anchor.reducer is not None and len(lt.group) > 1
            result = copies.result if overlapped or compressed else snap
            if compressed:
                for i, mean in enumerate(red.means):
                    anchor.reducer.finish(i, mean, result.views,
                                          to_gradient=anchor.outer is not None)
                if anchor.outer is not None:
                    anchor.outer_step(pseudo_gradient=True, tensors=result.views)
            else:
                if len(lt.group) == 1 and result is not snap:
                    for a, b in zip(result.storages, snap.storages):
                        a.copy_(b)
                anchor.after_mean(tensors=result.views)
            if overlapped and not red.dropped:  # c = r − s
                for a, b in zip(result.storages, snap.storages):
                    a.sub_(b)
            red.correction = result.views
    if not overlapped:
        red.dropped = True  # the tensors take the result itself
    red.means = red.items = None
    h.stats.levels[red.level].seconds += time.perf_counter() - began


def _shift(h: HierState, red: InFlight, correction: List[torch.Tensor]) -> None:
    """Add ``correction`` (or with ``dropped``, copy it) into the averaged tensors and into
    the anchors of the levels below ``red.level``."""
    relink(h)
    targets = [list(h.averager.tensors)] + [
        a.anchor for a in h.anchors[:red.level] if a is not None and a.taken]
    with torch.no_grad():
        for table in targets:
            views, tensors = _nonempty(correction, table)
            if not views:
                continue
            if red.dropped:
                torch._foreach_copy_(tensors, views)
            else:
                torch._foreach_add_(tensors, views)


def add(h: HierState, red: InFlight, deadline: Optional[float]) -> None:
    """``red`` is due: finish it (``StallError`` past ``deadline``) and add its correction."""
    finish(h, red, deadline)  # (counts its own time)
    began = time.perf_counter()
    _shift(h, red, red.correction)
    h.in_flight.remove(red)
    h.stats.levels[red.level].seconds += time.perf_counter() - began


def due(h: HierState, t: int) -> List[InFlight]:
    """The reductions due by the end of step ``t``, in the order they started."""
    return [red for red in h.in_flight if red.due <= t]


def settle(h: HierState, deadline: Optional[float]) -> None:
    """Finish every reduction in flight (their corrections stay pending until due)."""
    for red in list(h.in_flight):
        finish(h, red, deadline)


def discard(h: HierState, deadline: Optional[float] = None, running_only: bool = False,
            finish_running: bool = True) -> None:
    """Forget every reduction in flight and every pending correction (``running_only``: the
    reductions in flight only). A running one is first run to its end (the other ranks take
    part in its collectives; ``StallError`` past ``deadline``), unless ``finish_running`` is
    False (an elastic reset: its collectives belonged to the job before the reset)."""
    for red in h.in_flight:
        if red.pipeline is not None and finish_running:
            red.pipeline.drain(deadline)
        red.pipeline = None
    h.in_flight[:] = [red for red in h.in_flight if running_only and not red.running]


def portable(h: HierState) -> List[Dict[str, object]]:
    """The pending corrections as plain data with compact CPU copies (for checkpoints and for
    other ranks); call ``settle`` first."""
    out = []
    for red in h.in_flight:
        assert not red.running, "settle() the reductions in flight first"
        out.append({"level": red.level, "start": red.start, "due": red.due,
                    "dropped": red.dropped,
                    "correction": [c.detach().to("cpu", copy=True) for c in red.correction]})
    return out


def restore(h: HierState, saved: List[Dict[str, object]]) -> None:
    """Make ``saved`` (``portable()``'s output) the pending corrections of this rank (none
    may be running: ``discard`` them first)."""
    discard(h, finish_running=False)
    for item in saved or []:
        level = int(item["level"])
        copies = _copies(h, level, with_result=False)
        values = item["correction"]
        views = copies.snapshot.views
        if len(values) != len(views) or any(tuple(a.shape) != tuple(b.shape)
                                            for a, b in zip(values, views)):
            raise ValueError(f"the saved correction of the overlapped reduction of "
                             f"{level_name(h.config, level)} has {len(values)} tensors of other "
                             "shapes than this optimizer's averaged tensors")
        with torch.no_grad():
            for a, b in zip(views, values):
                a.copy_(b)
        h.in_flight.append(InFlight(level, int(item["start"]), int(item["due"]),
                                    bool(item["dropped"]), correction=views))
