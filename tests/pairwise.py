"""All-pairs test cases: every value of each parameter meets every value of every other
parameter in at least one case, in far fewer cases than the full product.

A fault that needs one parameter's value, or two parameters' values together (a dtype on one
instruction-set path, a layout with one codec), shows in some case; only a fault that needs
three values at once can hide. The cases are fixed (a greedy choice in a set order, no
randomness), so a failure names the same case on every machine.

Example::

    >>> cases = all_pairs({"a": [0, 1, 2], "b": "xy", "c": [True, False]})
    >>> len(cases) < 3 * 2 * 2
    True
    >>> covered = {(k1, c[k1], k2, c[k2]) for c in cases for k1 in c for k2 in c if k1 < k2}
    >>> len(covered) == 3 * 2 + 3 * 2 + 2 * 2
    True
"""

from itertools import combinations, product
from typing import Dict, List, Sequence

import pytest

__all__ = ["all_pairs", "pairwise_params"]


def _pairs_of(case: Sequence[int]):
    return {(i, case[i], j, case[j]) for i, j in combinations(range(len(case)), 2)}


def all_pairs(space: Dict[str, Sequence]) -> List[Dict[str, object]]:
    """Cases (dicts of parameter name to value) that cover every pair of values of two
    parameters of ``space``. Greedy: each new case is the one of the full product that
    covers the most pairs not yet covered (the first such in product order)."""
    names = list(space)
    sizes = [len(space[n]) for n in names]
    if any(s == 0 for s in sizes):
        raise ValueError(f"all_pairs: parameter {names[sizes.index(0)]!r} has no values")
    if len(names) < 2:
        return [{n: v for n in names} for n in names for v in space[n]]
    todo = set()
    for i, j in combinations(range(len(names)), 2):
        todo |= {(i, a, j, b) for a in range(sizes[i]) for b in range(sizes[j])}
    candidates = [(c, _pairs_of(c)) for c in product(*(range(s) for s in sizes))]
    chosen = []
    while todo:
        best, gain = None, 0
        for case, pairs in candidates:
            g = len(pairs & todo)
            if g > gain:
                best, gain = (case, pairs), g
        chosen.append(best[0])
        todo -= best[1]
    return [{n: space[n][k] for n, k in zip(names, case)} for case in chosen]


def pairwise_params(space: Dict[str, Sequence], ids=None):
    """``all_pairs(space)`` as the arguments of ``pytest.mark.parametrize``: the names joined
    by commas and one tuple per case (``ids``: a function of a value giving its id)."""
    names = list(space)
    show = ids or str
    cases = [pytest.param(*(c[n] for n in names), id="-".join(show(c[n]) for n in names))
             for c in all_pairs(space)]
    return ",".join(names), cases
