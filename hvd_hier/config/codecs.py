"""The codecs a level's ``compression`` names: ``TopK``, the sparse one, as an object (the
dense ones are strings, ``hvd_hier.config.levels.CODECS``)."""

from __future__ import annotations


import re

__all__ = ["TOPK_VALUES", "GATHERED", "ERROR_FEEDBACK", "TopK", "codec_named", "gathered",
           "feeds_back"]

TOPK_VALUES = ("int8", "int4", "int2")  #: the codecs a TopK's kept values can take
#: the codecs whose contributions every rank gathers and sums (a ``TopK`` too)
GATHERED = frozenset({"int4", "int2"})
#: the codecs that keep a residual (error feedback; a ``TopK`` too)
ERROR_FEEDBACK = frozenset({"int8", "int4", "int2"})


class TopK:
    """A level's ``compression`` that sends only the largest ``fraction`` of each chunk of its
    delta (by magnitude, 2048 elements to a chunk: ceil(fraction * 2048) of them), with their
    offsets and their values in ``values`` (``"int8"``, ``"int4"`` or ``"int2"``), and keeps
    the rest in the level's residual (error feedback). ``TopK(0.02, values="int2")`` sends
    about 0.44 bits per element. The ranks' contributions are gathered and summed in rank
    order (``hvd_hier.reduce.gathered``). The level checks the arguments."""

    __slots__ = ("fraction", "values")

    def __init__(self, fraction, values="int8"):
        object.__setattr__(self, "fraction", fraction)
        object.__setattr__(self, "values", values)

    def __setattr__(self, name, value):
        raise AttributeError("TopK is immutable")

    def __eq__(self, other):
        return isinstance(other, TopK) and (self.fraction, self.values) == (other.fraction,
                                                                           other.values)

    def __hash__(self):
        return hash((TopK, self.fraction, self.values))

    def __repr__(self):
        return f"TopK({self.fraction!r}, values={self.values!r})"

    def __str__(self):
        """The short name: ``topk0.02_int2``."""
        return f"topk{self.fraction:g}_{self.values}"

    def __reduce__(self):
        return (TopK, (self.fraction, self.values))

    def check(self, what: str) -> None:
        """ValueError (``what``: the argument's name, with its level) on a bad fraction or
        value codec."""
        f = self.fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            raise ValueError(f"{what}: TopK fraction must be a number in (0, 1), got {f!r}")
        if self.values not in TOPK_VALUES:
            raise ValueError(f"{what}: TopK values must be one of {', '.join(TOPK_VALUES)}, "
                             f"got {self.values!r}")


_SHORT = re.compile(r"^topk([0-9.eE+-]+)_(int8|int4|int2)$")


def codec_named(name):
    """What a level's ``compression`` takes for a codec's short name: the name itself, or
    the ``TopK`` that ``str()`` names (``topk0.02_int2``)."""
    m = _SHORT.match(name) if isinstance(name, str) else None
    return name if m is None else TopK(float(m.group(1)), values=m.group(2))


def gathered(codec) -> bool:
    """Whether every rank gathers every contribution of ``codec`` (int4, int2, a ``TopK``)."""
    return isinstance(codec, TopK) or codec in GATHERED


def feeds_back(codec) -> bool:
    """Whether ``codec`` can keep a residual (int8, int4, int2, a ``TopK``)."""
    return isinstance(codec, TopK) or codec in ERROR_FEEDBACK
