"""The checks of a level's options, each naming the level and the value: pure, shared by
``hvd_hier.config.levels`` (``Level``, ``levels=``, the two-level shorthand) and the anchors.
"""

from __future__ import annotations

from typing import Optional

from .codecs import TopK, feeds_back

__all__ = ["CODECS", "OUTER_EXAMPLE", "at", "check_options", "check_overlap",
           "check_fragments"]

CODECS = ("fp16", "bf16", "int8", "int4", "int2")  #: the values of a level's ``compression``
OUTER_EXAMPLE = "functools.partial(torch.optim.SGD, lr=0.7, momentum=0.9, nesterov=True)"


def check_overlap(where: str, options, period: int,
                  period_name: str = "the level's period") -> None:
    """``overlap_steps`` (already an int >= 0) must end the reduction before the level's next
    one: D < period (with fragments: D < period/F)."""
    d = options.get("overlap_steps")
    if d is not None and d >= period:
        raise ValueError(at(where, f"overlap_steps={d} must be smaller than {period_name} "
                                    f"{period}: the overlapped reduction ends D steps after it "
                                    "starts, before the level's next one"))
    f = options.get("fragments", 1)
    if d is not None and f > 1 and period % f == 0 and d >= period // f:
        raise ValueError(at(where, f"overlap_steps={d} must be smaller than period/fragments "
                                    f"= {period}/{f} = {period // f}: a fragment's reduction "
                                    "ends before the next fragment's starts"))


def check_fragments(where: str, level, below_period: Optional[int],
                    outermost: bool) -> None:
    """``fragments=F`` (already an int >= 1): the outermost level only, F dividing the
    period, period/F a multiple of the period below."""
    f = level.options.get("fragments", 1)
    if f == 1:
        return
    if not outermost:
        raise ValueError(at(where, f"fragments={f} is for the outermost level only (the one "
                                    "across the slow link)"))
    if level.period % f:
        raise ValueError(at(where, f"fragments={f} must divide the level's period "
                                    f"{level.period}: fragment f is reduced every "
                                    "period/fragments steps in turn"))
    step = level.period // f
    if below_period is not None and step % below_period:
        raise ValueError(at(where, f"period/fragments = {level.period}/{f} = {step} must be a "
                                    f"multiple of the period {below_period} of the level "
                                    "below, which averages the whole model at every "
                                    "fragment's step"))


def check_options(where: str, options, compression_name: str = "compression") -> None:
    """The values of a level's known options (``where`` names the level; "" for none;
    ``compression_name``: what the user called the codec's argument)."""
    if "overlap_steps" in options:
        d = options["overlap_steps"]
        if type(d) is not int or d < 0:
            raise ValueError(at(where, f"overlap_steps must be an integer >= 0 (steps the "
                                        f"reduction runs behind), got {d!r}"))
    f = options.get("fragments", 1)
    if type(f) is not int or f < 1:
        raise ValueError(at(where, f"fragments must be an integer >= 1 (parts of the model "
                                    f"reduced in turn), got {f!r}"))
    _check_error_feedback(where, options, compression_name)
    codec = options.get("compression")
    if isinstance(codec, TopK):
        codec.check(at(where, compression_name) if where else compression_name)
    elif codec is not None and codec not in CODECS:
        raise ValueError(at(where, f"{compression_name} must be one of {', '.join(CODECS)}, "
                                    f"a TopK (or None), got {codec!r}"))
    outer = options.get("outer")
    if outer is not None and not callable(outer):
        raise ValueError(at(where, "outer must be a callable that returns a torch.optim.Optimizer "
                                    f"over the tensors it is given (e.g. {OUTER_EXAMPLE}), got "
                                    f"{outer!r}"))


def _check_error_feedback(where: str, options, compression_name: str) -> None:
    if "error_feedback" not in options:
        return
    ef, codec = options["error_feedback"], options.get("compression")
    if type(ef) is not bool:
        raise ValueError(at(where, f"error_feedback must be True or False, got {ef!r}"))
    if not feeds_back(codec):
        raise ValueError(at(where, f"error_feedback={ef} needs an integer codec or a TopK "
                                    f"(int8, int4, int2), got {compression_name}={codec!r}"))


def at(where: str, message: str) -> str:
    """``message`` about the level ``where`` ("" for the two-level shorthand: no prefix)."""
    return f"{where}: {message}" if where else message
