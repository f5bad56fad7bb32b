"""An independent, deliberately plain implementation of the Hier-AVG semantics.

It shares no code with hvd_hier: the tests compare hvd_hier's parameters, step by step,
with what this simulation of all P learners computes.
"""

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
    of ranks. Returns a list over steps 1..steps of the list over ranks of arrays.
    """
    ranks = sorted(r for g in groups for r in g)
    w = {r: np.array(init[r], dtype=np.float64) for r in ranks}
    history = []
    for t in range(1, steps + 1):
        kind = reference_reduction(t, k1, k2, warmup)
        if kind == "sync":
            g = sum(np.asarray(grad(r, t), dtype=np.float64) for r in ranks) / len(ranks)
            for r in ranks:
                w[r] = w[r] - lr * g
        else:
            for r in ranks:
                w[r] = w[r] - lr * np.asarray(grad(r, t), dtype=np.float64)
            if kind == "global":
                mean = sum(w[r] for r in ranks) / len(ranks)
                for r in ranks:
                    w[r] = mean.copy()
            elif kind == "local":
                for g in groups:
                    mean = sum(w[r] for r in g) / len(g)
                    for r in g:
                        w[r] = mean.copy()
        history.append({r: w[r].copy() for r in ranks})
    return history
