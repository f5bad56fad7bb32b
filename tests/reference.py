"""An independent, deliberately plain implementation of the Hier-AVG semantics.

It shares no code with hvd_hier: the tests compare hvd_hier's parameters, step by step,
with what this simulation of all P learners computes.
"""

import math

import numpy as np


def reference_reduction(t, k1, k2, warmup):
    """The reduction of step t, written from the definition (not from hvd_hier.schedule)."""
    if t <= warmup:
        return "sync"
    u = t - warmup
    if u % (k1 * k2) == 0:
        return "global"
    if u % k1 == 0:
        return "local"
    return "none"


def simulate_sgd(init, grad, lr, groups, k1, k2, warmup, steps):
    """Plain SGD on P learners with Hier-AVG averaging.

    init: list over ranks of float64 arrays; grad(rank, t) -> array; groups: list of lists
    of ranks. Returns a list over steps 1..steps of the list over ranks of arrays. (Two
    levels: the groups every K1 steps, all ranks every K1*K2; see simulate_levels_sgd.)
    """
    everyone = [sorted(r for g in groups for r in g)]
    return simulate_levels_sgd(init, grad, lr, [groups, everyone], [k1, k1 * k2], warmup, steps)


def quadratic_problem(rank, t, dim):
    """Rank ``rank``'s loss at step ``t``: ``0.5 * a * ||w - b||^2``; returns ``(a, b)``.

    The gradient ``a * (w - b)`` depends on ``w``, so where and when the models are averaged
    changes the result (with a gradient independent of ``w`` it would not)."""
    rng = np.random.default_rng(1_000_003 * t + rank)
    return 0.5 + rng.random(), rng.standard_normal(dim)


def simulate_quadratic(w0, lr, segments, k1, k2, warmup, steps, dim):
    """Plain SGD on ``quadratic_problem`` under Hier-AVG, through a sequence of jobs.

    ``segments``: ``[(first_step, groups), ...]``: from step ``first_step + 1`` on, the job has
    the ranks of ``groups`` (lists of ranks). Every segment starts with every rank holding the
    same model: the first from ``w0``, the next ones from rank 0's model at their
    ``first_step`` in the previous segment (what an elastic job restores or broadcasts).
    Returns the list over ranks of the last segment of their models after ``steps``.
    (Two levels: the groups every K1 steps, all ranks every K1*K2.)
    """
    with_all = [(first, [groups, [sorted(r for g in groups for r in g)]]) for first, groups in segments]
    return simulate_quadratic_levels(w0, lr, with_all, [k1, k1 * k2], warmup, steps, dim)


def reference_level(t, periods, warmup):
    """The level averaging at step t, from the definition: the outermost whose period divides
    u = t - warmup; "sync" during warmup, None when no period divides u."""
    if t <= warmup:
        return "sync"
    u = t - warmup
    due = [i for i, p in enumerate(periods) if u % p == 0]
    return max(due) if due else None


class OuterSGD:
    """torch.optim.SGD's update written from its documented definition (dampening 0, no
    weight decay): b = g at the first step, then b = m * b + g; with nesterov the step is
    g + m * b, else b; x = x - lr * step. One per rank and level, like hvd_hier's."""

    def __init__(self, lr, momentum=0.0, nesterov=False):
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.buf = None

    def step(self, x, g):
        if self.momentum:
            self.buf = g.copy() if self.buf is None else self.momentum * self.buf + g
            g = g + self.momentum * self.buf if self.nesterov else self.buf
        return x - self.lr * g


def lower_groups_within(group, lower):
    """The groups of ``lower`` inside ``group`` when the level can reduce in two stages (every
    group made of 2 or more lower groups of one size of 2 or more), ordered by first rank;
    else None. Written from the definition, independently of hvd_hier.topology.groups."""
    if lower is None:
        return None
    inside = sorted(sorted(g) for g in lower if set(g) <= set(group))
    sizes = {len(g) for g in inside}
    if len(inside) < 2 or len(sizes) != 1 or min(sizes) < 2:
        return None
    return inside


class NoFeedback:
    """A level's codec with ``error_feedback=False``: what the round trip loses is dropped."""

    def __init__(self, codec):
        self.codec = codec

    def __repr__(self):
        return f"NoFeedback({self.codec!r})"


def average_level(w, groups, level, anchor, outer, codecs=None, residual=None, lower=None):
    """Level ``level`` averages ``w`` (rank -> array) within each of ``groups``: the plain
    mean, or with an outer optimizer (``outer[level][r]``, ``anchor[level][r]``) the anchor's
    outer step on anchor - mean, which every rank of the group takes. With a codec
    (``codecs[level]``) the mean is ``compressed_mean`` of the deltas from the anchor (float32;
    int8, int4, int2: plus this rank's residual ``residual[level][r]``, which keeps what the round trip
    lost), added to the anchor. Then the anchors of the levels below become the new model.

    ``lower``: the groups of the level below. Where a group is made of two or more lower
    groups of one size (two stages), a compressed level encodes one delta per lower group,
    from its mean (the residual is its first rank's), and takes the mean of those."""
    codec = (codecs or {}).get(level)
    feedback = not isinstance(codec, NoFeedback)
    codec = codec.codec if not feedback else codec
    for g in groups:
        if codec is not None and len(g) > 1:
            parts = lower_groups_within(g, lower)
            if parts is None:  # one stage: every rank encodes its own delta
                sources = [(r, w[r]) for r in g]
            else:  # two stages: the lower groups' means, encoded by their first ranks
                sources = [(p[0], sum(w[r] for r in p) / len(p)) for p in parts]
            deltas = []
            for r, value in sources:
                d = value - anchor[level][r]
                if feedback and (not isinstance(codec, str) or codec in RESIDUAL):
                    d = (d + residual[level][r]).astype(np.float32)
                    residual[level][r] = d - codec_round_trip(d, codec)
                deltas.append(d.astype(np.float32))
            step = compressed_mean(deltas, codec, len(deltas)).astype(np.float64)
            mean = None
        else:
            mean = sum(w[r] for r in g) / len(g)
        for r in g:
            if level in outer:
                pseudo = anchor[level][r] - mean if mean is not None else -step
                anchor[level][r] = outer[level][r].step(anchor[level][r], pseudo)
                w[r] = anchor[level][r].copy()
            else:
                w[r] = (mean if mean is not None else anchor[level][r] + step).copy()
                if level in anchor:
                    anchor[level][r] = w[r].copy()
    for i in anchor:
        if i < level:
            anchor[i] = {r: w[r].copy() for r in w}


def start_overlapped(w, level_groups, level, anchor, outer, codecs, residual):
    """An overlapped reduction of level ``level`` at its step, from the definition: the level
    below averages first (as if it were due), which gives the snapshot s; the level's result r
    is computed from s as the plain reduction would (the level's own anchor, outer momentum
    and residuals move now); the anchors of the levels below stay at s. Returns the
    correction r − s per rank."""
    if level > 0:
        average_level(w, level_groups[level - 1], level - 1, anchor, outer, codecs, residual,
                      level_groups[level - 2] if level > 1 else None)
    snapshot = {r: w[r].copy() for r in w}
    result = {r: w[r].copy() for r in w}
    lower = {i: anchor[i] for i in anchor if i < level}
    average_level(result, level_groups[level], level, anchor, outer, codecs, residual,
                  level_groups[level - 1] if level > 0 else None)
    anchor.update(lower)
    return {r: result[r] - snapshot[r] for r in w}


def add_correction(w, level, anchor, correction):
    """The end of an overlapped reduction: every rank adds its correction to its model and to
    the anchors of the levels below."""
    for r in w:
        w[r] = w[r] + correction[r]
        for i in anchor:
            if i < level and r in anchor[i]:
                anchor[i][r] = anchor[i][r] + correction[r]


def fragment_step(w, level_groups, level, idx, anchor, outer, codecs, residual, own_outer,
                  overlap):
    """Level ``level`` reduces the elements ``idx`` (one fragment) at its fragment's step, from
    the definition: the level below averages the whole model first (as if due); then the
    fragment's elements are reduced as ``average_level`` reduces a model (the fragment's own
    outer optimizers ``own_outer``, rank -> OuterSGD, and its slices of the level's anchor and
    residuals; a codec's chunks are those of the fragment's elements). Not overlapped, the
    result goes into the model and the anchors below become it; overlapped (returns the
    correction r − s per rank, zero outside ``idx``), the model stays at the snapshot s."""
    if level > 0:
        average_level(w, level_groups[level - 1], level - 1, anchor, outer, codecs, residual,
                      level_groups[level - 2] if level > 1 else None)
    sub = {r: w[r][idx].copy() for r in w}
    snap = {r: sub[r].copy() for r in w}
    own_anchor = {level: {r: anchor[level][r][idx].copy() for r in w}} if level in anchor else {}
    own_res = {level: {r: residual[level][r][idx].copy() for r in w}} if level in anchor else {}
    average_level(sub, level_groups[level], level, own_anchor, {level: own_outer} if own_outer
                  else {}, codecs, own_res, level_groups[level - 1] if level > 0 else None)
    for r in w:
        if level in anchor:
            anchor[level][r][idx] = own_anchor[level][r]
            residual[level][r][idx] = own_res[level][r]
    if overlap:
        correction = {r: np.zeros_like(w[r]) for r in w}
        for r in w:
            correction[r][idx] = sub[r] - snap[r]
        return correction
    for r in w:
        w[r][idx] = sub[r]
    for i in anchor:
        if i < level:
            anchor[i] = {r: w[r].copy() for r in w}
    return None


def simulate_levels_sgd(init, grad, lr, level_groups, periods, warmup, steps, outers=None,
                        codecs=None, overlaps=None, fragments=None):
    """Plain SGD on P learners averaged by levels: ``level_groups[i]`` lists the groups of
    level ``i`` (lists of ranks). Returns, per step 1..steps, the dict rank -> array.

    ``outers[i]``: None (plain averaging) or the keyword arguments of an ``OuterSGD`` for
    level ``i``: each rank keeps an anchor for that level, taken at the first step after
    warmup before its update and whenever a level above averages; at the level's averaging
    the outer optimizer steps on anchor - mean and every rank of the group takes the result.
    ``codecs[i]``: None or the compression of level ``i`` (see ``average_level``), which keeps
    an anchor too. ``overlaps[i]``: D >= 1 makes level ``i``'s reductions overlapped
    (``start_overlapped``): its correction is added at the end of step t + D, after that
    step's update and averaging. ``fragments[i]``: None, or the element positions of each of
    level ``i``'s F fragments: fragment f alone is reduced (``fragment_step``) at the steps
    where u = t − warmup is (f + 1)·period/F modulo the period.
    """
    ranks = sorted(r for g in level_groups[-1] for r in g)
    w = {r: np.array(init[r], dtype=np.float64) for r in ranks}
    outers = outers or [None] * len(periods)
    codecs = dict(enumerate(codecs or [None] * len(periods)))
    anchored = [i for i in range(len(periods)) if outers[i] is not None or codecs[i] is not None]
    anchor = {i: {} for i in anchored}
    residual = {i: {r: np.zeros(len(w[r]), dtype=np.float32) for r in ranks} for i in anchored}
    outer = {i: {r: OuterSGD(**o) for r in ranks} for i, o in enumerate(outers) if o is not None}
    overlaps = overlaps or [0] * len(periods)
    fragments = fragments or [None] * len(periods)
    every = [p // len(f) if f else p for p, f in zip(periods, fragments)]
    own_outer = {(i, f): {r: OuterSGD(**outers[i]) for r in ranks}
                 for i, parts in enumerate(fragments) if parts and outers[i] is not None
                 for f in range(len(parts))}
    pending = []  # (due step, level, correction per rank)
    history = []
    for t in range(1, steps + 1):
        level = reference_level(t, every, warmup)
        if level == "sync":
            g = sum(np.asarray(grad(r, t), dtype=np.float64) for r in ranks) / len(ranks)
            for r in ranks:
                w[r] = w[r] - lr * g
        else:
            if t == warmup + 1:
                for i in anchor:
                    anchor[i] = {r: w[r].copy() for r in ranks}
            for r in ranks:
                w[r] = w[r] - lr * np.asarray(grad(r, t), dtype=np.float64)
            if level is not None and fragments[level]:
                f = ((t - warmup) // every[level] - 1) % len(fragments[level])
                correction = fragment_step(w, level_groups, level, fragments[level][f], anchor,
                                           outer, codecs, residual, own_outer.get((level, f)),
                                           overlaps[level])
                if correction is not None:
                    pending.append((t + overlaps[level], level, correction))
            elif level is not None and overlaps[level]:
                pending.append((t + overlaps[level], level, start_overlapped(
                    w, level_groups, level, anchor, outer, codecs, residual)))
            elif level is not None:
                average_level(w, level_groups[level], level, anchor, outer, codecs, residual,
                              level_groups[level - 1] if level > 0 else None)
            for item in [p for p in pending if p[0] == t]:
                add_correction(w, item[1], anchor, item[2])
                pending.remove(item)
        history.append({r: w[r].copy() for r in ranks})
    return history


def simulate_quadratic_levels(w0, lr, segments, periods, warmup, steps, dim, outers=None,
                              overlaps=None):
    """``simulate_quadratic`` with levels: ``segments`` is ``[(first_step, level_groups), ...]``
    where ``level_groups[i]`` lists the groups of level ``i`` for that segment's ranks.

    ``outers[i]``: None or an ``OuterSGD``'s arguments for level ``i`` (as in
    ``simulate_levels_sgd``); a new segment starts every rank from rank 0's model, anchors and
    outer momentum (what an elastic job restores and broadcasts). ``overlaps[i]``: D >= 1
    overlaps level ``i`` (``start_overlapped``); a new segment also takes rank 0's pending
    corrections."""
    w = np.asarray(w0, dtype=np.float64)
    outers = outers or [None] * len(periods)
    overlaps = overlaps or [0] * len(periods)
    pending0 = []  # rank 0's corrections still to add: (due, level, vector)
    with_outer = [i for i, o in enumerate(outers) if o is not None]
    anchor0, buf0 = {}, {i: None for i in with_outer}
    for n, (first, level_groups) in enumerate(segments):
        last = segments[n + 1][0] if n + 1 < len(segments) else steps
        ranks = sorted(r for g in level_groups[-1] for r in g)
        models = {r: w.copy() for r in ranks}
        anchor = {i: {r: anchor0[i].copy() for r in ranks} if i in anchor0 else {}
                  for i in with_outer}
        outer = {i: {r: OuterSGD(**outers[i]) for r in ranks} for i in with_outer}
        for i in with_outer:
            for r in ranks:
                outer[i][r].buf = None if buf0[i] is None else buf0[i].copy()
        pending = [(due, level, {r: c.copy() for r in ranks}) for due, level, c in pending0]
        for t in range(first + 1, last + 1):
            level = reference_level(t, periods, warmup)
            grads = {}
            for r in ranks:
                a, b = quadratic_problem(r, t, dim)
                grads[r] = a * (models[r] - b)
            if level == "sync":
                g = sum(grads[r] for r in ranks) / len(ranks)
                for r in ranks:
                    models[r] = models[r] - lr * g
                continue
            if t == warmup + 1:
                for i in with_outer:
                    anchor[i] = {r: models[r].copy() for r in ranks}
            for r in ranks:
                models[r] = models[r] - lr * grads[r]
            if level is not None and overlaps[level]:
                pending.append((t + overlaps[level], level, start_overlapped(
                    models, level_groups, level, anchor, outer, None, None)))
            elif level is not None:
                average_level(models, level_groups[level], level, anchor, outer)
            for item in [p for p in pending if p[0] == t]:
                add_correction(models, item[1], anchor, item[2])
                pending.remove(item)
        w = models[0]
        anchor0 = {i: anchor[i][0] for i in with_outer if anchor[i]}
        buf0 = {i: outer[i][0].buf for i in with_outer}
        pending0 = [(due, level, c[0]) for due, level, c in pending]
        if n + 1 == len(segments):
            return [models[r] for r in ranks]


# ---- compressed deltas, written from the wire format's definition (hvd_hier.reduce.codec) ----
CODEC_CHUNK = 2048


def round_bf16(x):
    """float32 -> the nearest bfloat16 (ties to even), returned as float32."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32)


def _int2_scale(v):
    """int2's chunk scale: 0.625 times the mean |v|, the mean counted in units of 2^-20 of
    max |v| (exact integers), all in float32."""
    amax = np.float32(np.max(np.abs(v)))
    if not np.isfinite(amax):
        return np.float32(np.nan)
    if amax == 0 or not np.isfinite(np.float32(1.0) / amax):
        return np.float32(0.0)
    ia = np.float32(1.0) / amax
    t = np.minimum(np.abs(v) * ia, np.float32(1.0))
    units = int(np.floor(t * np.float32(2.0 ** 20)).astype(np.int64).sum())
    mean = np.float32(units) / np.float32(len(v) * 2.0 ** 20) * amax
    return np.float32(mean * np.float32(0.625))


def _values_round_trip(v, values):
    """The dense rule of ``values`` (int8, int4, int2) over all of v, one scale."""
    if values == "int2":
        scale = _int2_scale(v)
    else:
        levels = np.float32(127.0 if values == "int8" else 7.0)
        scale = np.float32(np.max(np.abs(v)) / levels) if len(v) else np.float32(0)
    inv = np.float32(1.0) / scale if scale > 0 else np.float32(0.0)
    t = v * inv
    if values == "int2":
        q = np.where(t >= 2, 3, np.where(t >= 0, 1, np.where(t >= -2, -1, -3)))
    else:
        q = np.clip(np.rint(t), -levels, levels)
    return q.astype(np.float32) * scale


def _topk_round_trip(d, codec):
    """A TopK: per chunk, the k = ceil(fraction * 2048) elements of largest |d| (ties: the
    lower index) through their value codec over those k, the others 0."""
    k = max(1, math.ceil(codec.fraction * CODEC_CHUNK))
    out = np.zeros_like(d)
    for c in range(0, len(d), CODEC_CHUNK):
        v = d[c:c + CODEC_CHUNK]
        keys = v.view(np.uint32) & np.uint32(0x7FFFFFFF)
        order = np.lexsort((np.arange(len(v)), -keys.astype(np.int64)))
        kept = np.sort(order[:min(k, len(v))])
        out[c + kept] = _values_round_trip(v[kept], codec.values)
    return out


def codec_round_trip(d, codec):
    """What a float32 vector ``d`` becomes after encoding and decoding: fp16 / bf16 casts;
    int8 and int4 with one scale per chunk of 2048 (scale = max|d| / L, L = 127 or 7, q =
    round-half-even(d / scale computed as d * (1 / scale)), clamped to +-L); int2 with the
    four levels {-3, -1, 1, 3} * scale (``_int2_scale``), the level above d * (1 / scale)
    rounded down to an odd number (t >= 2: 3, t >= 0: 1, t >= -2: -1, else -3)."""
    d = np.asarray(d, dtype=np.float32)
    if not isinstance(codec, str):
        return _topk_round_trip(d, codec)
    if codec == "fp16":
        return d.astype(np.float16).astype(np.float32)
    if codec == "bf16":
        return round_bf16(d)
    out = np.empty_like(d)
    for c in range(0, len(d), CODEC_CHUNK):
        out[c:c + CODEC_CHUNK] = _values_round_trip(d[c:c + CODEC_CHUNK], codec)
    return out


#: the codecs whose contributions every rank gathers and sums, with no second encoding
GATHERED = ("int4", "int2")
#: the codecs with error feedback
RESIDUAL = ("int8", "int4", "int2")


def compressed_mean(deltas, codec, divisor):
    """The decoded mean a compressed reduction gives every rank: each rank's delta (float32)
    encoded and decoded, summed in float32 in rank order, times 1/divisor in float32, and
    (fp16, bf16, int8: the mean reduced shard by shard) encoded and decoded again."""
    total = np.zeros_like(np.asarray(deltas[0], dtype=np.float32))
    for d in deltas:
        total = total + codec_round_trip(d, codec)
    mean = total * np.float32(1.0 / divisor)
    gathered = not isinstance(codec, str) or codec in GATHERED
    return mean if gathered else codec_round_trip(mean, codec)
