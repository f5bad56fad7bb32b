"""A text corpus that needs no download: bytes of the Python standard library's own sources.

The files are listed in ``stdlib_files.txt`` beside this module: 356 files, 7.4 to 7.7 MB by
Python release, every ``.py`` file outside tests that Python 3.10 to 3.13 all ship, less five
packages that are not ordinary code. They are read from the standard library of the Python
that runs this, in the order of the list; the tokens are the bytes (a vocabulary of 256).

* **Splits by file.** A file belongs to ``train``, ``val`` or ``test`` by a hash of its path
  (5% of the files each to ``val`` and ``test``): the same on every Python, and no text is in
  two splits.
* **A fingerprint per Python.** ``Corpus.sha256`` hashes every file's path and bytes in list
  order. ``KNOWN_SHA256`` records it for the Python releases it was taken on; ``Corpus.check``
  says whether this one matches, and a run records the answer in its JSON: a corpus that
  differs is reported, not hidden.
* **Non-IID shards.** ``Corpus.shards(n)`` deals the training files out to ``n`` readers by
  *unit* (the top-level package, or the module for a file at the top): each reader gets whole
  packages of its own, and the shards are balanced in bytes (largest unit first, to the
  smallest shard so far). A learner or a node that reads its own shard sees the natural
  heterogeneity of code from different packages.

Example::

    corpus = load()
    ok, why = corpus.check()
    x, y = sample_batch(corpus.split("train"), batch=8, context=128, generator=g)
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

FILE_LIST = Path(__file__).resolve().parent / "stdlib_files.txt"
SPLITS = ("train", "val", "test")
HELD_OUT_PERCENT = 5  # of the files, each to val and to test

# Corpus.sha256 on the Python releases it was taken on, by minor version: (release, sha256).
KNOWN_SHA256: Dict[str, Tuple[str, str]] = {
    "3.10": ("3.10.13", "4d2c72bd12716755ddf627e4ebebf6436ac35c28cf227a94d573fb719e73ee47"),
    "3.11": ("3.11.7", "63566a8a876be1babdf698464549d7f4317662a4418212ed57a7b0a016c7523c"),
    "3.12": ("3.12.1", "3d343c683cbead1e11a8d9c3cfcf2531f62d8bfc6a1ec624d220c830f6dcd239"),
    "3.13": ("3.13.0", "32b6f18274e771183b9c55374a700663bb6da68ae98ed3d0b9242d8c824cfaf5"),
}


def stdlib_dir() -> Path:
    """The standard library folder of the Python running this."""
    return Path(sysconfig.get_paths()["stdlib"])


def python_name() -> str:
    return f"Python {sys.version.split()[0]} ({sys.executable})"


def read_file_list(path: Path = FILE_LIST) -> List[str]:
    """The corpus's files, relative to the standard library folder, in order."""
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def split_of(path: str) -> str:
    """``train``, ``val`` or ``test``: by a hash of the file's path (not its bytes), so the
    split is the same on every Python."""
    bucket = int(hashlib.sha256(path.encode()).hexdigest()[:8], 16) % 100
    if bucket < HELD_OUT_PERCENT:
        return "val"
    if bucket < 2 * HELD_OUT_PERCENT:
        return "test"
    return "train"


def unit_of(path: str) -> str:
    """The top-level package of a file, or its module name for a file at the top."""
    head = path.split("/", 1)[0]
    return head[:-3] if head.endswith(".py") else head


def balanced_shards(sizes: Dict[str, int], n: int) -> List[List[str]]:
    """Deal units out to ``n`` shards: the largest unit first (ties by name), each to the
    shard with the fewest bytes so far (ties: the lowest index). Deterministic.

    >>> balanced_shards({"a": 5, "b": 4, "c": 3, "d": 2}, 2)
    [['a', 'd'], ['b', 'c']]
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of shards) must be an integer >= 1, got {n!r}")
    if n > len(sizes):
        raise ValueError(f"cannot deal {len(sizes)} units out to {n} shards: every shard needs "
                         "at least one")
    shards: List[List[str]] = [[] for _ in range(n)]
    load = [0] * n
    for unit in sorted(sizes, key=lambda u: (-sizes[u], u)):
        i = min(range(n), key=lambda k: (load[k], k))
        shards[i].append(unit)
        load[i] += sizes[unit]
    return shards


@dataclass(frozen=True)
class Corpus:
    root: Path
    paths: Tuple[str, ...]
    contents: Tuple[bytes, ...]

    def split(self, name: str) -> torch.Tensor:
        """The bytes of one split's files, concatenated in list order, as a uint8 tensor."""
        return self._join(i for i, p in enumerate(self.paths) if split_of(p) == _split_name(name))

    def shard_units(self, n: int) -> List[List[str]]:
        """The units of the training split dealt out to ``n`` readers (see the module doc)."""
        sizes: Dict[str, int] = {}
        for p, c in zip(self.paths, self.contents):
            if split_of(p) == "train":
                sizes[unit_of(p)] = sizes.get(unit_of(p), 0) + len(c)
        return balanced_shards(sizes, n)

    def shards(self, n: int) -> List[torch.Tensor]:
        """The training split's bytes dealt out to ``n`` readers by unit."""
        return [self._join(i for i, p in enumerate(self.paths)
                           if split_of(p) == "train" and unit_of(p) in set(units))
                for units in self.shard_units(n)]

    def _join(self, indices) -> torch.Tensor:
        data = b"".join(self.contents[i] for i in indices)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.contents)

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for p, c in zip(self.paths, self.contents):
            h.update(p.encode() + b"\0" + str(len(c)).encode() + b"\0")
            h.update(c)
        return h.hexdigest()

    def check(self) -> Tuple[bool, str]:
        """Whether this corpus is the one recorded for this Python's minor version, and what
        was compared."""
        minor = "%d.%d" % sys.version_info[:2]
        mine = self.sha256
        if minor not in KNOWN_SHA256:
            return False, (f"no sha256 recorded for Python {minor}; this corpus ({python_name()}) "
                           f"is {mine}")
        release, known = KNOWN_SHA256[minor]
        if known != mine:
            return False, (f"the corpus of {python_name()} is {mine}, not the {known} recorded "
                           f"for Python {release}: the standard library's sources differ")
        return True, f"sha256 {mine}, as recorded for Python {release}"


def _split_name(name: str) -> str:
    if name not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
    return name


def load(root: Optional[Path] = None, file_list: Path = FILE_LIST) -> Corpus:
    """Read the listed files from ``root`` (default: this Python's standard library).
    Raises FileNotFoundError naming the files that are missing and the Python looked in."""
    root = Path(root) if root is not None else stdlib_dir()
    paths = read_file_list(file_list)
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        raise FileNotFoundError(
            f"{len(missing)} of the corpus's {len(paths)} standard-library files are missing "
            f"from {root} ({python_name()}): {shown}")
    return Corpus(root, tuple(paths), tuple((root / p).read_bytes() for p in paths))


def sample_batch(data: torch.Tensor, batch: int, context: int,
                 generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """``batch`` windows of ``context + 1`` bytes at random offsets of ``data``: inputs and
    next-byte targets, int64 of shape (batch, context)."""
    if len(data) < context + 2:
        raise ValueError(f"{len(data)} bytes are too few for windows of {context + 1}")
    starts = torch.randint(0, len(data) - context - 1, (batch,), generator=generator)
    windows = torch.stack([data[s:s + context + 1] for s in starts.tolist()]).long()
    return windows[:, :-1], windows[:, 1:]


def eval_windows(data: torch.Tensor, count: int, context: int) -> torch.Tensor:
    """``count`` windows of ``context + 1`` bytes at evenly spaced offsets of ``data`` (the
    same for every run): int64 of shape (count, context + 1)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if len(data) < context + 1:
        raise ValueError(f"{len(data)} bytes are too few for a window of {context + 1}")
    last = len(data) - context - 1
    starts = [round(i * last / max(1, count - 1)) for i in range(count)]
    return torch.stack([data[s:s + context + 1] for s in starts]).long()
