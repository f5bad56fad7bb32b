"""One stage or two: over which ranks a staged reduction's pieces run, and which pieces this
rank reduces.

``OneStage``: every piece, over the level's group. ``TwoStage`` (a level whose groups are
made of k >= 2 groups of the level below, all of one size S >= 2): the ranks of each group
below first hold the same values (the group below's mean), then rank j of it reduces every
S-th piece, from j, across its cross group (``LevelTopology.cross_group``: the ranks at
position j of every group below), and the group below gathers the shares. A node's uplink
then carries 2(N − 1)/N of the model for N groups below instead of 2(P − 1)/P of it.
"""

from __future__ import annotations

from typing import List, Optional

import torch

import horovod.torch as hvd

from ..comm.collectives import wait

__all__ = ["OneStage", "TwoStage"]


class OneStage:
    """Every piece over the level's group."""

    factor = 1  #: the sums' scale is factor / divisor

    def __init__(self, lt):
        self.lt = lt

    def describe(self) -> Optional[str]:
        return None

    def owned(self, n: int) -> List[int]:
        return list(range(n))

    def reducing(self):
        """(process set, members) of the pieces' collectives."""
        return self.lt.process_set, self.lt.group

    def gather(self, red, sizes, lower_set, device, deadline: Optional[float]) -> None:
        """Nothing to gather: this rank reduced every piece."""


class TwoStage(OneStage):
    """This rank's share of the pieces across its cross group, then the gather of the shares
    within the group below."""

    def __init__(self, lt):
        super().__init__(lt)
        self.factor = lt.shares  # the group below's mean enters S times over

    def describe(self) -> str:
        return f"two-stage over {len(self.lt.cross_group)} groups of {self.lt.shares}"

    def owned(self, n: int) -> List[int]:
        return list(range(self.lt.share, n, self.lt.shares))

    def reducing(self):
        return self.lt.cross_set, self.lt.cross_group

    def gather(self, red, sizes, lower_set, device, deadline: Optional[float]) -> None:
        """Every rank of the group below receives the others' reduced pieces (``red.items``:
        chunks of a copy, or the encoded means; ``sizes``: their bytes) in one allgather of
        bytes (a rank that owns no piece sends nothing, from ``device``)."""
        lt, n = self.lt, len(red.items)
        with torch.no_grad():
            mine = [red.items[i].reshape(-1).view(torch.uint8) for i in red.owned]
            payload = torch.cat(mine) if mine else torch.empty(0, dtype=torch.uint8, device=device)
            got = wait(hvd.allgather_async(payload, name=f"hvd_hier.{red.level}.shares",
                                           process_set=lower_set), deadline)
            offset = 0
            for j in range(lt.shares):
                for i in range(j, n, lt.shares):
                    part = got[offset:offset + sizes[i]]
                    offset += sizes[i]
                    if j == lt.share:
                        continue
                    if red.means is not None:
                        red.means[i] = part.clone()
                    else:
                        red.items[i].reshape(-1).view(torch.uint8).copy_(part)
