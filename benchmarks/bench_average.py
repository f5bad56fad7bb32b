"""The memory side of one model averaging, measured side by side in one run.

    python benchmarks/bench_average.py [--repeats 15] [--dtypes float32,bfloat16] [--json out.json]

For the parameter shapes of ResNet-18, ResNet-50 and a transformer block (benchmarks/shapes.py)
and each dtype, it times, interleaved round-robin so that machine noise hits all alike:

* fused      hvd_hier's bucketed pack + unpack with the 1/n scale fused into the unpack
             (BucketAverager.memory_passes: what an averaging does besides the network);
* flat       hvd_hier with persistent flat storage (FlatAverager.memory_passes): the
             parameters are views into the reduced buffers, so no copy at all, only the
             in-place 1/n scale of the buffers after the reduction (one pass);
* torch      PyTorch's average_parameters: torch.cat of every parameter, divide in place,
             re-point each p.data at its slice of the new flat tensor;
* torch_copy the same, copying back into the parameters instead of re-pointing;
* horovod    hvd.grouped_allreduce_(params, op=hvd.Average) on a process set of one rank:
             Horovod's copies into and out of its fusion buffer (plus its queueing);
* bound      this machine's copy bandwidth for the same bytes: a plain copy_ of a buffer of
             the model's size, twice (an averaging needs at least two passes: pack, unpack).

A second section times the compressed-delta kernels (hvd_hier._C.encode_delta and apply_delta,
what a compressed averaging level does besides the network) on one model's float32 shapes
(--codec-model, ResNet-50 by default), interleaved with the copy bound measured again beside them:

* encode_int8_res  encode_delta, int8 with error feedback: reads x, the anchor and the residual,
                   writes the residual and the encoded buffer (2064 bytes per 2048 elements);
* encode_bf16      encode_delta, bf16 without residuals: reads x and the anchor, writes 2 bytes;
* apply_int8       apply_delta of an int8 buffer: reads it and the anchor, writes x and the anchor;
* apply_bf16       the same from a bf16 buffer.

Each op's GB/s is the bytes it must move (per element: 17.0, 10, 13.0 and 14) over its time; its
fraction of the copy bound divides that by the copy's GB/s. The tensors go in calls of at most
MAX_TENSORS_PER_DELTA_LAUNCH tensors and --bucket-cap-mb of parameters, as buckets would.

GB/s is the minimal traffic of an averaging that copies (read + write of the model, twice)
over the measured time, the same numerator for every method, so ratios are ratios of times;
flat storage needs half that traffic, so its GB/s is an equivalent, not a bandwidth. The
peak extra memory (float32) is measured in a fresh process per method as the growth of the
peak resident set over the resident set with the model allocated (Linux: VmHWM, reset
through /proc/self/clear_refs).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import MODELS, numel  # noqa: E402

import hvd_hier  # noqa: E402,F401  (before hvd.init)
import horovod.torch as hvd  # noqa: E402
from hvd_hier.comm.extension import extension  # noqa: E402
from hvd_hier.reduce.buckets import BucketAverager  # noqa: E402
from hvd_hier.reduce.flat import FlatAverager  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
METHODS = ["fused", "flat", "torch", "torch_copy", "horovod", "bound"]


def make_params(shapes, dtype):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


class Methods:
    """One callable per method over the same parameters. Scales alternate 1/4 and 4 so that
    the values neither vanish into denormals nor grow (both are exact in every dtype)."""

    def __init__(self, params, bucket_cap_mb, with_bound=True, flat_params=None):
        self.params = params
        self.averager = BucketAverager(params, int(bucket_cap_mb * 2**20))
        # flat storage re-points its tensors for good: it gets its own copy of the model
        self.flat_averager = None if flat_params is None else FlatAverager(
            flat_params, int(bucket_cap_mb * 2**20))
        if with_bound:
            n = numel([p.shape for p in params])
            self.src = torch.empty(n, dtype=params[0].dtype).fill_(1)
            self.dst = torch.empty_like(self.src).fill_(0)
        self.flip = False

    def scale(self):
        self.flip = not self.flip
        return 0.25 if self.flip else 4.0

    def fused(self):
        self.averager.memory_passes(self.scale())

    def flat(self):
        self.flat_averager.memory_passes(self.scale())

    def torch(self):
        flat = torch.cat([p.data.reshape(-1) for p in self.params])
        flat.div_(1 / self.scale())
        offset = 0
        for p in self.params:
            p.data = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()

    def torch_copy(self):
        flat = torch.cat([p.data.reshape(-1) for p in self.params])
        flat.div_(1 / self.scale())
        torch._foreach_copy_(self.params, [f.view_as(p) for f, p in zip(
            flat.split([p.numel() for p in self.params]), self.params)])

    def horovod(self):
        hvd.grouped_allreduce_(self.params, op=hvd.Average, name="bench.horovod")

    def bound(self):
        self.dst.copy_(self.src)
        self.src.copy_(self.dst)


def measure(model, dtype_name, repeats, bucket_cap_mb):
    shapes = MODELS[model]
    dtype = DTYPES[dtype_name]
    params = make_params(shapes, dtype)
    methods = Methods(params, bucket_cap_mb, flat_params=make_params(shapes, dtype))
    available = {}
    for name in METHODS:
        try:
            getattr(methods, name)()
            available[name] = getattr(methods, name)
        except Exception as exc:  # e.g. a dtype Horovod's CPU ops do not take
            available[name] = None
            print(f"  {model} {dtype_name} {name}: not measured ({type(exc).__name__}: "
                  f"{str(exc).splitlines()[0][:100]})", file=sys.stderr)
    times = {name: [] for name, fn in available.items() if fn is not None}
    for r in range(repeats + 2):
        order = list(times)
        order = order[r % len(order):] + order[:r % len(order)]
        for name in order:
            t0 = time.perf_counter()
            available[name]()
            dt = time.perf_counter() - t0
            if r >= 2:
                times[name].append(dt)
    nbytes = numel(shapes) * params[0].element_size()
    traffic = 4 * nbytes  # read + write, pack and unpack
    row = {"model": model, "dtype": dtype_name, "tensors": len(shapes), "MB": nbytes / 1e6}
    for name in METHODS:
        if name in times:
            med = statistics.median(times[name])
            row[f"{name}_ms"] = med * 1e3
            row[f"{name}_ms_spread"] = (max(times[name]) - min(times[name])) * 1e3
            row[f"{name}_GBps"] = traffic / med / 1e9
        else:
            row[f"{name}_ms"] = None
    def ratio(a, b):
        return None if row.get(f"{a}_ms") is None or row.get(f"{b}_ms") is None else row[f"{b}_ms"] / row[f"{a}_ms"]
    row["fused_vs_bound"] = ratio("fused", "bound")
    row["fused_speedup_vs_torch"] = ratio("fused", "torch")
    row["fused_speedup_vs_torch_copy"] = ratio("fused", "torch_copy")
    row["fused_speedup_vs_horovod"] = ratio("fused", "horovod")
    row["flat_speedup_vs_fused"] = ratio("flat", "fused")
    row["flat_vs_bound"] = ratio("flat", "bound")
    return row


# The compressed-delta ops timed, with the bytes each must move per element of float32
# parameters (records: 2064 bytes per 2048 int8 values, 4096 per 2048 bf16 values).
_INT8 = 2064 / 2048
CODEC_OPS = {
    "encode_int8_res": ("encode_delta int8, residuals", 4 * 3 + 4 + _INT8),  # x, a, r in; r, codes out
    "encode_bf16": ("encode_delta bf16", 4 * 2 + 2),  # x, a in; codes out
    "apply_int8": ("apply_delta int8", _INT8 + 4 + 4 * 2),  # codes, a in; x, a out
    "apply_bf16": ("apply_delta bf16", 2 + 4 + 4 * 2),
}


def plan_calls(shapes, itemsize, max_tensors, cap_bytes):
    """Consecutive groups of tensor indices: at most max_tensors tensors and cap_bytes each."""
    calls, current, size = [], [], 0
    for i, shape in enumerate(shapes):
        nbytes = numel([shape]) * itemsize
        if current and (len(current) == max_tensors or size + nbytes > cap_bytes):
            calls.append(current)
            current, size = [], 0
        current.append(i)
        size += nbytes
    if current:
        calls.append(current)
    return calls


class CodecOps:
    """The compressed-delta ops over one model's float32 parameters, bucket by bucket, with
    anchors one small step away (the delta of a few local steps) and float32 residuals."""

    def __init__(self, shapes, bucket_cap_mb):
        C = extension()
        self.C = C
        g = torch.Generator().manual_seed(1)
        self.anchors = [torch.randn(s, generator=g) for s in shapes]
        self.params = [a + 1e-3 * torch.randn(s, generator=g) for a, s in zip(self.anchors, shapes)]
        self.residuals = [torch.zeros(s) for s in shapes]
        self.calls = plan_calls(shapes, 4, C.MAX_TENSORS_PER_DELTA_LAUNCH, int(bucket_cap_mb * 2**20))
        self.out = {codec: [torch.empty(C.encoded_bytes(codec, sum(self.params[i].numel() for i in call)),
                                        dtype=torch.uint8) for call in self.calls]
                    for codec in ("int8", "bf16")}
        for codec in ("int8", "bf16"):  # the buffers apply_delta decodes
            self._encode(codec, with_residuals=False)
        n = numel(shapes)
        self.src = torch.empty(n).fill_(1)
        self.dst = torch.empty(n).fill_(0)

    def _pick(self, tensors, call):
        return [tensors[i] for i in call]

    def _encode(self, codec, with_residuals):
        for call, out in zip(self.calls, self.out[codec]):
            residuals = self._pick(self.residuals, call) if with_residuals else []
            self.C.encode_delta(self._pick(self.params, call), self._pick(self.anchors, call), residuals, out, codec)

    def _apply(self, codec):
        for call, src in zip(self.calls, self.out[codec]):
            self.C.apply_delta(src, self._pick(self.params, call), self._pick(self.anchors, call), codec)

    def encode_int8_res(self):
        self._encode("int8", with_residuals=True)

    def encode_bf16(self):
        self._encode("bf16", with_residuals=False)

    def apply_int8(self):
        self._apply("int8")

    def apply_bf16(self):
        self._apply("bf16")

    def bound(self):
        self.dst.copy_(self.src)
        self.src.copy_(self.dst)


def measure_codec(model, repeats, bucket_cap_mb):
    """Median times of the compressed-delta ops and of the copy bound, interleaved round-robin."""
    shapes = MODELS[model]
    ops = CodecOps(shapes, bucket_cap_mb)
    names = list(CODEC_OPS) + ["bound"]
    times = {name: [] for name in names}
    for r in range(repeats + 2):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            getattr(ops, name)()
            dt = time.perf_counter() - t0
            if r >= 2:
                times[name].append(dt)
    n = numel(shapes)
    bound_s = statistics.median(times["bound"])
    bound_gbps = 4 * 4 * n / bound_s / 1e9  # read + write of the float32 model, twice
    result = {"model": model, "dtype": "float32", "elements": n, "tensors": len(shapes),
              "calls": len(ops.calls), "bound_ms": bound_s * 1e3, "bound_GBps": bound_gbps, "ops": {}}
    for name, (what, per_element) in CODEC_OPS.items():
        med = statistics.median(times[name])
        gbps = per_element * n / med / 1e9
        result["ops"][name] = {"what": what, "bytes_per_element": per_element, "ms": med * 1e3,
                               "ms_spread": (max(times[name]) - min(times[name])) * 1e3,
                               "GBps": gbps, "vs_bound": gbps / bound_gbps}
    return result


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_probe(method, model, bucket_cap_mb):
    """Run in a fresh process: growth of the peak resident set during two averagings, bytes.

    The kernel's high-water mark (VmHWM) is reset to the current resident set first
    (/proc/self/clear_refs), so only what the method allocates and touches counts.
    """
    params = make_params(MODELS[model], torch.float32)
    if method == "flat":  # the model lives in flat storage from the start
        methods = Methods([], bucket_cap_mb, with_bound=False, flat_params=params)
    else:
        methods = Methods(params, bucket_cap_mb, with_bound=False)
    del params
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_kb("VmRSS")
    for _ in range(2):
        getattr(methods, method)()
    return max(0, _status_kb("VmHWM") - base)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--bucket-cap-mb", type=float, default=25.0)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--codec-model", default="resnet50",
                   help="the model whose float32 shapes the compressed-delta kernels are timed on")
    p.add_argument("--no-codec", action="store_true", help="skip the compressed-delta kernels")
    p.add_argument("--memory-probe", nargs=2, metavar=("METHOD", "MODEL"), help=argparse.SUPPRESS)
    args = p.parse_args()

    hvd.init()
    if args.memory_probe:
        print(memory_probe(*args.memory_probe, args.bucket_cap_mb))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, bucket cap {args.bucket_cap_mb} MiB", flush=True)
    rows = []
    for model in args.models.split(","):
        for dtype_name in args.dtypes.split(","):
            rows.append(measure(model, dtype_name, args.repeats, args.bucket_cap_mb))
    codec = None if args.no_codec else measure_codec(args.codec_model, args.repeats, args.bucket_cap_mb)
    memory = {}
    if not args.no_memory:
        for model in args.models.split(","):
            for method in ("fused", "flat", "torch", "horovod"):
                out = subprocess.run(
                    [sys.executable, __file__, "--memory-probe", method, model,
                     "--bucket-cap-mb", str(args.bucket_cap_mb)],
                    capture_output=True, text=True, timeout=600)
                memory[f"{model}/{method}"] = int(out.stdout.split()[-1]) if out.returncode == 0 else None

    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    header = (f"{'model':<18}{'dtype':<10}{'MB':>8}{'fused GB/s':>12}{'torch':>8}{'copy-back':>10}"
              f"{'horovod':>9}{'bound':>8}{'fused/bound':>12}{'x torch':>9}{'x copy':>8}{'x hvd':>7}"
              f"{'flat ms':>9}{'flat x fused':>13}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<18}{r['dtype']:<10}{r['MB']:>8.1f}{fmt(r.get('fused_GBps'), '.1f'):>12}"
              f"{fmt(r.get('torch_GBps'), '.1f'):>8}{fmt(r.get('torch_copy_GBps'), '.1f'):>10}"
              f"{fmt(r.get('horovod_GBps'), '.1f'):>9}{fmt(r.get('bound_GBps'), '.1f'):>8}"
              f"{fmt(r['fused_vs_bound'], '.2f'):>12}{fmt(r['fused_speedup_vs_torch'], '.2f'):>9}"
              f"{fmt(r['fused_speedup_vs_torch_copy'], '.2f'):>8}{fmt(r['fused_speedup_vs_horovod'], '.2f'):>7}"
              f"{fmt(r.get('flat_ms'), '.1f'):>9}{fmt(r['flat_speedup_vs_fused'], '.2f'):>13}")
    if memory:
        print("\npeak extra memory of one averaging, float32 (MB):")
        for model in args.models.split(","):
            cells = "  ".join(f"{m} {fmt(None if memory[f'{model}/{m}'] is None else memory[f'{model}/{m}'] / 1e6, '.1f')}"
                              for m in ("fused", "flat", "torch", "horovod"))
            print(f"  {model:<18} {cells}")
    if codec:
        print(f"\ncompressed deltas, {codec['model']} float32 ({codec['elements'] / 1e6:.1f}M elements, "
              f"{codec['tensors']} tensors in {codec['calls']} calls); copy bound "
              f"{codec['bound_GBps']:.1f} GB/s ({codec['bound_ms']:.1f} ms):")
        print(f"  {'op':<30}{'bytes/elem':>11}{'ms':>9}{'GB/s':>8}{'of copy':>9}")
        for op in codec["ops"].values():
            print(f"  {op['what']:<30}{op['bytes_per_element']:>11.2f}{op['ms']:>9.1f}{op['GBps']:>8.1f}"
                  f"{op['vs_bound']:>9.2f}")
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(),
              "bucket_cap_mb": args.bucket_cap_mb, "rows": rows, "peak_extra_bytes": memory}
    if codec:
        result["codec"] = codec
    print("\nJSON: " + json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
