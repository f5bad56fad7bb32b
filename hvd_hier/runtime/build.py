"""The levels of one optimizer, built before any collective: ``build_levels`` gives each level
its ``LevelRuntime`` (``hvd_hier.runtime.level``) with the anchor, outer optimizer and codec
it asks for, and a level with fragments its ``FragmentedLevel`` (``hvd_hier.runtime.fragments``)
of one runtime per fragment."""

from __future__ import annotations

import dataclasses
from typing import List, Sequence

import torch

from ..outer.anchor import Anchor
from ..reduce.buckets import BucketAverager
from ..reduce.codec import piece_bucket_cap
from ..reduce.gathered import make_reducer
from ..reduce.strategy import Context
from .fragments import FragmentedLevel, plan_fragments
from .level import LevelRuntime, level_name

__all__ = ["build_levels"]


def build_levels(config, tensors, averager, ctx: Context) -> List[LevelRuntime]:
    """One ``LevelRuntime`` per level of ``config``, innermost first, with the anchors, outer
    optimizers (built and checked over the anchors) and codecs the levels ask for; before any
    collective. An overlapped compressed level's buckets are one piece each."""
    flat = averager.buckets if config.flat_storage else None
    out: List[LevelRuntime] = []
    for i, spec in enumerate(config.levels):
        name, where = level_name(config, i), "" if config.shorthand else f"levels[{i}]"
        if spec.options.get("fragments", 1) > 1:
            parts = _fragments(config, i, where, tensors, ctx, list(out))
            out.append(FragmentedLevel(i, spec, name, tensors.all, ctx, list(out), parts,
                                       config.schedule))
            continue
        anchor, reducer = _anchor_and_codec(config, spec, where, tensors.all,
                                            len(tensors.params), flat)
        out.append(LevelRuntime(i, spec, name, tensors.all, ctx, list(out), anchor, reducer))
    return out


def _anchor_and_codec(config, spec, where: str, tensors: Sequence[torch.Tensor],
                      num_params: int, flat=None):
    """The level's ``Anchor`` over ``tensors`` (parameters first) and its reducer, where its
    options ask for them (else None)."""
    outer, codec = spec.options.get("outer"), spec.options.get("compression")
    anchor = reducer = None
    if outer is not None or codec is not None:
        anchor = Anchor(where, tensors, num_params, outer if num_params else None, flat)
    if codec is not None:
        cap = piece_bucket_cap(codec) if spec.options.get("overlap_steps") \
            else config.bucket_cap_bytes
        reducer = make_reducer(codec, tensors, anchor.anchor, cap,
                               error_feedback=spec.options.get("error_feedback", True))
    return anchor, reducer


def _fragments(config, i: int, where: str, tensors, ctx: Context,
               below: List[LevelRuntime]) -> List[LevelRuntime]:
    """One runtime per fragment of level ``i``, over its tensors, with its own averager."""
    spec, everything = config.levels[i], tensors.all
    count = spec.options["fragments"]
    if count > len(everything):
        raise ValueError(f"{where}: fragments={count} is more than the {len(everything)} "
                         "tensors the level averages (a fragment holds whole tensors)")
    sizes = [t.numel() * t.element_size() for t in everything]
    parts = []
    for f, positions in enumerate(plan_fragments(sizes, count)):
        mine = [everything[j] for j in positions]
        num_params = sum(1 for j in positions if j < len(tensors.params))
        averager = BucketAverager(mine, config.bucket_cap_bytes,
                                  max_in_flight=1 if config.deterministic else 2)
        part_ctx = dataclasses.replace(ctx, averager=averager, indices=tuple(positions),
                                       lower_done=True)
        anchor, reducer = _anchor_and_codec(config, spec, where, mine, num_params)
        part = LevelRuntime(i, spec, level_name(config, i), mine, part_ctx, below, anchor,
                            reducer)
        part.tag = f"{part.tag}.f{f}"
        parts.append(part)
    return parts
