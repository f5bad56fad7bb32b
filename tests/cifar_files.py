"""A tiny CIFAR-10 written in the exact format of the python version (cifar-10-batches-py)."""

import pickle
from pathlib import Path

import numpy as np


def write_cifar(folder: Path, per_batch=6, test=4, seed=0):
    """A tiny CIFAR-10 in the exact python-pickle format of cifar-10-batches-py: dicts with
    bytes keys, b'data' a uint8 array of shape (N, 3072) (1024 red, then green, then blue
    values, row-major), b'labels' a list of ints, plus batches.meta."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        batch = {b"batch_label": f"{name} of 6".encode(),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"img_{k}.png".encode() for k in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = batch
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [b"airplane", b"automobile", b"bird",
            b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"], b"num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return written
