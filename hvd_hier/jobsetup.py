"""Fitting an optimizer to the job as Horovod sees it: the ranks' agreement (one allgather of
configuration, tensors, host and schedule position), every level's groups and their process
sets. Run at construction, and in elastic jobs at the first step and after every reset."""

from __future__ import annotations

import os
import socket
from typing import List, Optional

import horovod.torch as hvd

from .collectives import allgather_object
from .config import check_tensors
from .levels import adapt_level_groups, check_level_sizes, plan_level_groups
from .topology import build_topology

__all__ = ["hostname", "elastic_job", "check_agreement", "setup"]


def hostname() -> str:
    # horovodrun gives each rank the host name it was placed on; it tells apart two names
    # of one machine (e.g. localhost and 127.0.0.1) as two hosts, as Horovod itself does.
    return os.environ.get("HOROVOD_HOSTNAME") or socket.gethostname()


def elastic_job() -> bool:
    """Whether horovodrun started this process for elastic training (it sets HOROVOD_ELASTIC)."""
    return os.environ.get("HOROVOD_ELASTIC") == "1"


def _describe(sig) -> str:
    shape, dtype, stride, device = sig
    return f"shape {tuple(shape)}, {dtype}, strides {tuple(stride)} on {device}"


def check_agreement(payloads: list, set_ranks: List[int], names: List[str]) -> None:
    """Raise the same ValueError on every rank if the ranks' configurations differ."""
    ref = payloads[0]
    for rank, other in zip(set_ranks[1:], payloads[1:]):
        for key, value in ref["config"].items():
            if other["config"][key] != value:
                raise ValueError(
                    f"hvd_hier.DistributedOptimizer: ranks disagree on {key}: rank "
                    f"{set_ranks[0]} has {value!r}, rank {rank} has {other['config'][key]!r}; "
                    "every rank must pass the same arguments"
                )
        for what in ("params", "buffers"):
            mine, theirs = ref[what], other[what]
            if len(mine) != len(theirs):
                raise ValueError(
                    f"hvd_hier.DistributedOptimizer: ranks disagree on the {what}: rank "
                    f"{set_ranks[0]} has {len(mine)} tensors, rank {rank} has {len(theirs)}"
                )
            for i, (a, b) in enumerate(zip(mine, theirs)):
                if a != b:
                    label = names[i] if what == "params" else f"buffer {i}"
                    raise ValueError(
                        f"hvd_hier.DistributedOptimizer: ranks disagree on {label}: rank "
                        f"{set_ranks[0]} has {_describe(a)}, rank {rank} has {_describe(b)}; "
                        "every rank must build the same model in the same order"
                    )


def setup(state, deadline: Optional[float] = None):
    """Fit the optimizer to the job as Horovod now sees it: ``(topology, payloads, notes)``.

    Every rank of the process set calls it at the same point: at construction, or (elastic
    jobs, and after Horovod was initialised again) at the first step. Checks that need no
    other rank come first and raise on every rank before any collective; then one allgather
    tells every rank the others' configuration, tensors, host and schedule position (the
    ranks must agree), and every level's process sets are created. ``notes`` say how an
    elastic job's groups differ from the levels' group sizes (``adapt_level_groups``).
    """
    process_set = state.process_set
    set_ranks = list(range(hvd.size())) if process_set.process_set_id == 0 else list(
        process_set.ranks)
    if hvd.rank() not in set_ranks:
        raise ValueError(
            f"process_set {set_ranks} does not include this rank ({hvd.rank()}); create the "
            "optimizer only on the ranks of process_set")
    elastic = elastic_job()
    config = state.config
    levels = config.levels
    names = ["" for _ in levels] if config.shorthand else None  # the shorthand names no level
    if not elastic:  # sizes that cannot fit fail here, before any collective
        check_level_sizes(set_ranks, levels, names)
    tensors, labels = state.tensors.all, state.tensors.labels
    check_tensors(tensors, labels)

    def signature(t):
        return (tuple(t.shape), str(t.dtype), tuple(t.stride()), t.device.type)

    n = len(state.tensors.params)
    payload = {"config": dict(config.agreement(), process_set=set_ranks),
               "params": [signature(t) for t in tensors[:n]],
               "buffers": [signature(t) for t in tensors[n:]], "host": hostname(), "t": state.position.t}
    payloads = ([payload] if len(set_ranks) == 1 else
                allgather_object(payload, process_set, deadline=deadline))
    check_agreement(payloads, set_ranks, labels[:n])
    hosts = [p["host"] for p in payloads]
    notes: List[str] = []
    if elastic:
        level_groups, notes = adapt_level_groups(set_ranks, levels, hosts, names)
    else:
        level_groups = plan_level_groups(set_ranks, levels, hosts, names)
    topology = build_topology(set_ranks, level_groups, process_set, hvd.rank(), hvd.size())
    return topology, payloads, notes
