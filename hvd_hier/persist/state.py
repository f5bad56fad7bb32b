"""hvd_hier's part of the optimizer's state dict, under ``"hvd_hier"``, in one place.

Its keys (unchanged since the first version that had each, so that older checkpoints load):

* ``step``: the schedule position (calls of ``step()``);
* ``config``: the schedule in the user's words (compared on load, with a warning if it
  differs);
* ``stats``: the counters (``Stats.to_dict``);
* ``anchors``: per level, None or its anchor, outer optimizer state and error residuals
  (``LevelRuntime.state_dict``);
* ``overlap``: the corrections of overlapped reductions not yet added, each with its level,
  the step it started and the step it is due (``LevelRuntime.corrections``).
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Optional

__all__ = ["STATE_KEY", "hier_state_dict", "corrections", "restore_corrections", "load_saved",
           "load_nothing"]

STATE_KEY = "hvd_hier"


def hier_state_dict(h) -> Dict[str, object]:
    """The ``"hvd_hier"`` entry of the optimizer's state dict (settle the reductions in
    flight first: their corrections are saved)."""
    return {"step": h.position.t, "config": h.config.schedule_config(),
            "stats": h.stats.to_dict(h.level_stats()), "anchors": [lv.state_dict() for lv in h.levels],
            "overlap": corrections(h)}


def corrections(h) -> List[Dict[str, object]]:
    """Every level's pending corrections as plain data, in the order they started."""
    out = [item for lv in h.levels for item in lv.corrections()]
    return sorted(out, key=lambda item: item["start"])


def restore_corrections(h, saved: Optional[List[Dict[str, object]]]) -> None:
    """Make ``saved`` (``corrections()``'s output) the pending corrections of this rank (none
    may be running: discard them first)."""
    for lv in h.levels:
        lv.discard(finish_running=False)
    for item in saved or []:
        index = int(item["level"])
        if not 0 <= index < len(h.levels):
            raise ValueError(f"the saved correction of an overlapped reduction belongs to level "
                             f"{index}, and this optimizer has {len(h.levels)} levels")
        h.levels[index].restore(item)


def load_saved(h, saved: Dict[str, object]) -> None:
    """Restore the schedule position, the counters and the anchors from ``saved`` (the
    corrections follow separately: running reductions must end first)."""
    mine = h.config.schedule_config()
    if saved["config"] != mine:
        warnings.warn(
            f"hvd_hier: the checkpoint was saved with {saved['config']}, this optimizer "
            f"has {mine}; continuing from step {saved['step']} with the new schedule")
    h.position.t = int(saved["step"])
    h.stats.load(saved["stats"], h.level_stats())
    _load_anchors(h, saved.get("anchors"))


def load_nothing(h) -> None:
    """A state dict saved by a plain optimizer: the schedule starts again at step 0, the
    counters from zero, the anchors afresh after warmup (the reductions in flight and
    pending corrections: discard them first)."""
    warnings.warn(
        "hvd_hier: the optimizer state dict has no Hier-AVG schedule (it was saved by "
        "a plain optimizer); the schedule starts again at step 0")
    h.position.t = 0
    h.stats.zero(h.level_stats())
    for lv in h.levels:
        lv.reset()


def _load_anchors(h, saved) -> None:
    """Restore the anchors of the levels with ``outer`` or ``compression`` from a checkpoint
    of the same levels; otherwise (another configuration, or none saved) they are taken
    afresh at the next step after warmup, with a warning if the checkpoint had some."""
    mine = [lv.anchor is not None for lv in h.levels]
    if saved is not None and [s is not None for s in saved] == mine:
        for lv, sd in zip(h.levels, saved):
            if lv.anchor is not None:
                lv.load_state_dict(sd)
        return
    for lv in h.levels:
        lv.reset()
    if any(mine) or (saved and any(s is not None for s in saved)):
        warnings.warn("hvd_hier: the checkpoint's outer optimizers do not match this "
                      "optimizer's levels; their anchors are taken afresh at the next step "
                      "after warmup (outer momentum starts from zero)")
