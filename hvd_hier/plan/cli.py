"""Which schedule to use: ``python -m hvd_hier.plan`` measures the job
(``hvd_hier.plan.measure``) inside a job started with horovodrun, predicts the step time of
candidate settings with the cost model of ``hvd_hier.plan.model`` (its module doc has the
formula), and prints them with
a recommendation. ``plan()`` does the same from Python.

The benchmark on the simulated cluster (``benchmarks/cluster``) checks the model and the
planner against measured step times.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from ..config.codecs import TopK, codec_named
from .measure import measure
from .model import (HALF_BYTES_PER_ELEMENT, INT8_BYTES_PER_ELEMENT,  # noqa: F401  (re-exported)
                        Cluster, encoded_size, global_link_bytes, hidden_seconds, is_gathered,
                        overlap_collectives, peak_link_bytes, record_bytes, ring, step_time)

__all__ = ["ring", "global_link_bytes", "peak_link_bytes", "step_time", "hidden_seconds",
           "overlap_collectives", "encoded_size", "Cluster", "Setting", "Prediction", "candidates", "predict",
           "shortest_overlap", "recommend", "table", "measure", "plan", "main"]


@dataclass(frozen=True)
class Setting:
    """A candidate: K1, K2, the global level's compression (a codec's name, or a top-k's
    short name such as ``topk0.02_int2``), overlap_steps and fragments."""

    k1: int
    k2: int
    compression: Optional[str] = None
    overlap: int = 0
    fragments: int = 1

    def describe(self) -> str:
        words = [f"K1={self.k1} K2={self.k2}"]
        if self.compression:
            words.append(self.compression)
        if self.overlap:
            words.append(f"overlap {self.overlap}")
        if self.fragments > 1:
            words.append(f"{self.fragments} fragments")
        return ", ".join(words)

    def arguments(self) -> str:
        """The keyword arguments of ``hvd_hier.DistributedOptimizer`` for this setting: the
        two-level form, or ``levels=`` with fragments (which it has no word for)."""
        codec = self.compression
        named = codec_named(codec)
        codec_text = f"hvd_hier.{named!r}" if isinstance(named, TopK) else repr(codec)
        if self.fragments > 1:
            opts = "".join(f", {k}={v}" for k, v in (
                ("compression", codec_text if codec else None),
                ("overlap_steps", self.overlap or None), ("fragments", self.fragments)) if v)
            return (f"levels=[({self.k1}, 'local'), hvd_hier.Level({self.k1 * self.k2}, "
                    f"'all'{opts})]")
        out = [f"local_steps={self.k1}", f"local_rounds={self.k2}"]
        if codec:
            out.append(f"global_compression={codec_text}")
        if self.overlap:
            out.append(f"overlap_steps={self.overlap}")
        return ", ".join(out)


@dataclass(frozen=True)
class Prediction:
    setting: Setting
    step: float  #: seconds per step
    share: float  #: the part of the step not spent computing
    peak: float = 0.0  #: bytes on a node's uplink at a step with a global reduction


def candidates(periods: Sequence[int] = (4, 8, 16, 32), k1s: Sequence[int] = (1, 2, 4),
               codecs: Sequence[Optional[str]] = (None, "bf16", "int8"),
               overlap: bool = True, fragments: Sequence[int] = (1,)) -> List[Setting]:
    """The default grid: K1 in ``k1s`` dividing each period, each codec, each count of
    ``fragments`` that the schedule allows (F dividing K2), with and without overlap
    (D = K1·K2/F − 1, the most a fragment allows)."""
    out = []
    for period in periods:
        for k1 in k1s:
            if period % k1 or period // k1 < 1:
                continue
            for codec in codecs:
                for f in (f for f in fragments if (period // k1) % f == 0):
                    step = period // f
                    for d in ((0, step - 1) if overlap and step > 1 else (0,)):
                        out.append(Setting(k1, period // k1, codec, d, f))
    return out


def predict(cluster: Cluster, size_bytes: float, settings: Sequence[Setting],
            two_stage: bool = True) -> List[Prediction]:
    """The model's step time for each setting (two-stage where the ranks of a node form the
    local groups: hvd_hier's default ``group_size="local"``)."""
    out = []
    for s in settings:
        encoded = encoded_size(size_bytes, s.compression) if s.compression else None
        t = step_time("hier", s.k1, s.k2, size_bytes, cluster.p, cluster.l, cluster.t_compute,
                      cluster.b_inter, cluster.t_local, cluster.latency, encoded=encoded,
                      two_stage=two_stage, overlap=s.overlap,
                      t_codec=cluster.t_codec.get(s.compression, 0.0) if s.compression else 0.0,
                      t_global=cluster.t_global.get(s.compression) if s.compression else None,
                      collectives=overlap_collectives(size_bytes, cluster.l, encoded, two_stage),
                      gathered=is_gathered(s.compression), fragments=s.fragments)
        peak = peak_link_bytes(size_bytes, cluster.p, cluster.l, encoded,
                               two_stage and cluster.two_stage, is_gathered(s.compression),
                               s.fragments)
        out.append(Prediction(s, t, 1.0 - cluster.t_compute / t if t > 0 else 0.0, peak))
    return out


def shortest_overlap(cluster: Cluster, size_bytes: float, predictions: Sequence[Prediction],
                     two_stage: bool = True, within: float = 0.01) -> List[Prediction]:
    """Each overlapped prediction with the smallest ``overlap_steps`` whose predicted step is
    within ``within`` of its own: while a reduction is in flight the nodes differ by D steps
    of their own progress, and a D as long as a period cost 1.8 points on the non-IID sweep
    (docs/RESULTS.md), so D should be no longer than it takes to hide the reduction."""
    out = []
    for p in predictions:
        s = p.setting
        if s.overlap:
            for d in range(1, s.overlap + 1):
                (q,) = predict(cluster, size_bytes,
                               [Setting(s.k1, s.k2, s.compression, d, s.fragments)], two_stage)
                if q.step <= (1 + within) * p.step:
                    p = q
                    break
        out.append(p)
    return out


def recommend(predictions: Sequence[Prediction], tolerance: float = 0.10) -> Prediction:
    """The setting to start from: among those within ``tolerance`` of the fastest, the one
    that averages most often (the smallest K1·K2, then the smallest K1: the closest to
    synchronous SGD), then without compression, then without overlap."""
    best = min(p.step for p in predictions)
    near = [p for p in predictions if p.step <= (1 + tolerance) * best]
    return min(near, key=lambda p: (p.setting.k1 * p.setting.k2, p.setting.k1,
                                    p.setting.compression is not None, p.setting.overlap,
                                    p.setting.fragments))


def table(cluster: Cluster, size_bytes: float, predictions: Sequence[Prediction],
          chosen: Optional[Prediction] = None, rows: int = 20) -> str:
    """Markdown: the measured figures, the ``rows`` fastest settings (and the recommended
    one), and the recommendation."""
    lines = [f"{cluster.p} ranks, {cluster.l} per node; model {size_bytes / 1e6:.1f} MB; "
             f"computation {1e3 * cluster.t_compute:.1f} ms per step; a local averaging "
             f"{1e3 * cluster.t_local:.1f} ms; a node's uplink {cluster.b_inter / 1e6:.1f} MB/s"
             + "".join(f"; a global reduction with {codec} {1e3 * t:.1f} ms"
                       for codec, t in sorted(cluster.t_global.items())),
             "", "| setting | predicted step | communication share | uplink MB at a global step |",
             "|---|---:|---:|---:|"]
    ranked = sorted(predictions, key=lambda p: p.step)
    shown = ranked[:rows] + ([chosen] if chosen is not None and chosen not in ranked[:rows]
                             else [])
    for p in shown:
        mark = " **(recommended)**" if chosen is not None and p is chosen else ""
        lines.append(f"| {p.setting.describe()}{mark} | {1e3 * p.step:.1f} ms | "
                     f"{100 * p.share:.0f}% | {p.peak / 1e6:.2f} |")
    if chosen is not None:
        lines += ["", f"Recommended: hvd_hier.DistributedOptimizer(..., "
                      f"{chosen.setting.arguments()}) — the setting that averages most often "
                      "among those within 10% of the fastest."]
    return "\n".join(lines)


def plan(size_bytes: float, step_fn: Optional[Callable[[], None]] = None,
         compute_s: Optional[float] = None, settings: Optional[Sequence[Setting]] = None,
         repeats: int = 5) -> Tuple[Cluster, List[Prediction], Prediction]:
    """``measure`` the job, ``predict`` every setting (default: ``candidates()``), shorten
    each overlap to the ``shortest_overlap`` that hides as much, and ``recommend`` one:
    ``(cluster, predictions, recommended)``. Every rank calls it alike."""
    settings = settings or candidates()
    codecs = sorted({s.compression for s in settings if s.compression})
    cluster = measure(size_bytes, step_fn, compute_s, repeats, codecs=codecs)
    predictions = shortest_overlap(cluster, size_bytes, predict(
        cluster, size_bytes, settings, two_stage=cluster.two_stage), cluster.two_stage)
    return cluster, predictions, recommend(predictions)


def _load_step(spec: str):
    """``module:function``: function() returns ``(model, step)``, step() one training step."""
    import importlib

    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--step must be module:function, got {spec!r}")
    return getattr(importlib.import_module(module), name)()


def _codecs(text: str) -> List[Optional[str]]:
    out = []
    for name in text.split(","):
        if name == "none":
            out.append(None)
            continue
        try:
            record_bytes(name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        out.append(name)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hvd_hier.plan",
        description="Inside a job started with horovodrun: measure the cluster and print the "
                    "predicted step time of Hier-AVG settings, with a recommendation.")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--model-mb", type=float, help="bytes averaged, in MB (1e6)")
    size.add_argument("--params", type=int, help="float32 parameters averaged")
    size.add_argument("--step", help="module:function returning (model, step): the model's "
                                     "float parameters are averaged, step() is timed")
    p.add_argument("--compute-ms", type=float,
                   help="milliseconds of computation per step (instead of timing --step)")
    p.add_argument("--periods", default="4,8,16,32", help="K1*K2 values to consider")
    p.add_argument("--codecs", default="none,bf16,int8", type=_codecs,
                   help="global compressions to consider: none, fp16, bf16, int8, int4, int2, "
                        "topk<fraction>_<int8|int4|int2>")
    p.add_argument("--fragments", default="1", help="counts of streaming fragments to consider")
    p.add_argument("--repeats", type=int, default=5, help="timings per figure (median)")
    p.add_argument("--rows", type=int, default=20, help="settings shown, fastest first")
    p.add_argument("--json", help="also write the figures and every prediction to this file")
    return p


def main(argv=None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    import horovod.torch as hvd

    hvd.init()
    step_fn = None
    if args.step:
        model, step_fn = _load_step(args.step)
        size_bytes = float(sum(t.numel() * t.element_size() for t in model.parameters()))
    else:
        size_bytes = args.model_mb * 1e6 if args.model_mb is not None else 4.0 * args.params
    if args.compute_ms is None and step_fn is None:
        p.error("--compute-ms is needed without --step")
    compute_s = None if args.compute_ms is None else args.compute_ms / 1e3
    periods = [int(v) for v in args.periods.split(",")]
    fragments = [int(v) for v in args.fragments.split(",")]
    cluster, predictions, chosen = plan(size_bytes, step_fn, compute_s,
                                        candidates(periods, codecs=args.codecs,
                                                   fragments=fragments), args.repeats)
    if hvd.rank() == 0:
        print(table(cluster, size_bytes, predictions, chosen, args.rows), flush=True)
        if args.json:
            import dataclasses
            import json

            with open(args.json, "w") as f:
                json.dump({"cluster": dataclasses.asdict(cluster), "size_bytes": size_bytes,
                           "recommended": dataclasses.asdict(chosen.setting),
                           "predictions": [dict(dataclasses.asdict(p.setting), step=p.step,
                                                share=p.share, peak_link_bytes=p.peak)
                                           for p in predictions]},
                          f, indent=1)
    hvd.allreduce(__import__("torch").zeros(1), name="hvd_hier.plan.done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
