"""The GPU check's driver, run by scripts/gpu_check.sh after the build (docs/GPU.md).

    PYTHONPATH=BUILD/python python scripts/gpu_check.py --out DIR --build-dir BUILD \
        --arch 90 --build-ms 61234 [--cpu-rehearsal]

Runs tests/gpu (on the GPU, or only collected in a CPU rehearsal), times pack and unpack and
the compressed-delta kernels' encode and apply at ResNet-50 sizes against a device-to-device
copy of the same bytes with CUDA events (a CPU
rehearsal runs the same timing code on the CPU with host timers, on small shapes), writes
gpu_check.json and gpu_check.md into DIR and prints the table last. Exits 1 if a test fails,
the extension is not the one just built, or a CUDA step breaks.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from shapes import MODELS, numel  # noqa: E402

TARGET = 0.8  # pack and unpack at ResNet-50 sizes: at least this fraction of the copy's speed
TEST_TIMEOUT_S = 300


def machine(rehearsal: bool) -> dict:
    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "cpus": os.cpu_count()}
    if not rehearsal:
        p = torch.cuda.get_device_properties(0)
        info.update(card=p.name, capability="%d.%d" % (p.major, p.minor),
                    multiprocessors=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"unavailable ({exc})"
    return info


def check_extension(build_dir: Path, rehearsal: bool) -> dict:
    import hvd_hier
    from hvd_hier.comm.extension import extension

    C = extension()
    where = Path(C.__file__).resolve()
    if build_dir.resolve() not in where.parents:
        raise SystemExit(f"gpu_check: hvd_hier._C was imported from {where}, not from the build "
                         f"folder {build_dir}; check PYTHONPATH")
    if not rehearsal and not C.built_with_cuda():
        raise SystemExit(f"gpu_check: {where} was built without CUDA")
    return {"path": str(where), "package": str(Path(hvd_hier.__file__).parent),
            "built_with_cuda": bool(C.built_with_cuda()), "cuda_threads": C.CUDA_THREADS,
            "cuda_chunk_bytes": C.CUDA_CHUNK_BYTES, "vector_bytes": C.VECTOR_BYTES,
            "vector_unroll": C.VECTOR_UNROLL}


def junit_counts(xml_path: Path) -> dict:
    """Counts per test file and in total from a pytest JUnit XML report."""
    root = ET.parse(xml_path).getroot()
    files: dict = {}
    for case in root.iter("testcase"):
        name = case.get("classname", "").split(".")[-1] or "?"
        row = files.setdefault(name, {"passed": 0, "failed": 0, "skipped": 0, "seconds": 0.0})
        row["seconds"] += float(case.get("time", 0) or 0)
        if case.find("failure") is not None or case.find("error") is not None:
            row["failed"] += 1
        elif case.find("skipped") is not None:
            row["skipped"] += 1
        else:
            row["passed"] += 1
    total = {k: sum(r[k] for r in files.values()) for k in ("passed", "failed", "skipped", "seconds")}
    return {"files": files, "total": total}


def run_tests(out: Path, build_dir: Path, rehearsal: bool) -> dict:
    """pytest tests/gpu from the build folder (so the repository's own hvd_hier, which has no
    CUDA build, is not on the path): on the GPU in full, in a rehearsal collected only."""
    env = dict(os.environ, HVD_HIER_GPU_CHECK_DEVICE="cuda_emulation" if rehearsal else "cuda")
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "gpu"), "-q", "-p", "no:cacheprovider",
           "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")]
    xml = out / "kernel_tests.xml"
    cmd += ["--collect-only"] if rehearsal else ["--junitxml", str(xml)]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=build_dir, env=env, capture_output=True, text=True,
                          timeout=TEST_TIMEOUT_S)
    seconds = time.monotonic() - start
    (out / "pytest.log").write_text(proc.stdout + proc.stderr)
    result = {"returncode": proc.returncode, "seconds": round(seconds, 1)}
    if rehearsal:
        m = re.search(r"(\d+) tests? collected", proc.stdout)
        result["collected"] = int(m.group(1)) if m else 0
        result["ok"] = proc.returncode == 0 and result["collected"] > 0
    else:
        result.update(junit_counts(xml) if xml.exists() else {"files": {}, "total": {}})
        result["ok"] = proc.returncode == 0 and result["total"].get("passed", 0) > 0
    if not result["ok"]:
        print(proc.stdout[-6000:] + proc.stderr[-3000:], file=sys.stderr)
    return result


class Timer:
    """Median time of fn() in microseconds: CUDA events around each call (replaying a CUDA
    graph of it where it captures, so that host overhead stays out), or host timers on CPU."""

    def __init__(self, device: torch.device, repeats: int, warmup: int):
        self.device, self.repeats, self.warmup = device, repeats, warmup

    def __call__(self, fn, graph: bool = True) -> dict:
        if self.device.type != "cuda":
            for _ in range(self.warmup):
                fn()
            times = []
            for _ in range(self.repeats):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e6)
            return {"us": statistics.median(times), "graph": False}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        run, captured = fn, False
        if graph:
            try:
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    fn()
                run, captured = g.replay, True
            except RuntimeError as exc:  # capture refused: time eagerly, and say so
                print(f"gpu_check: graph capture failed ({exc}); timing eagerly", file=sys.stderr)
        for _ in range(self.warmup):
            run()
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                 for _ in range(self.repeats)]
        for start, end in pairs:
            start.record()
            run()
            end.record()
        torch.cuda.synchronize()
        return {"us": statistics.median(s.elapsed_time(e) * 1e3 for s, e in pairs), "graph": captured}


def best_copy(timer: Timer, src: torch.Tensor, dst: torch.Tensor) -> dict:
    """The fastest way this card copies src into dst: torch's copy_ (a memcpy) captured in a
    graph and eagerly, and an elementwise kernel that reads and writes the same bytes on the
    multiprocessors (a graph's memcpy node may run on a slower copy engine)."""
    ways = {"copy_ (graph)": timer(lambda: dst.copy_(src)),
            "copy_ (eager)": timer(lambda: dst.copy_(src), graph=False),
            "elementwise kernel": timer(lambda: torch.mul(src, 1, out=dst))}
    how = min(ways, key=lambda k: ways[k]["us"])
    return {"us": ways[how]["us"], "how": how, "all_us": {k: round(v["us"], 2) for k, v in ways.items()}}


def time_kernels(device: torch.device, model: str, repeats: int, warmup: int) -> list:
    """pack and unpack of the model's parameters against a copy of the same bytes."""
    from hvd_hier.comm.extension import extension

    C = extension()
    timer = Timer(device, repeats, warmup)
    shapes = MODELS[model]
    n = numel(shapes)
    g = torch.Generator().manual_seed(0)
    rows = []
    f32, bf16 = torch.float32, torch.bfloat16
    cases = [  # (op, tensor dtype, bucket dtype, scale, tensors one element off: scalar path)
        ("pack", f32, f32, 1.0, False), ("unpack", f32, f32, 0.25, False),
        ("pack", bf16, bf16, 1.0, False), ("unpack", bf16, bf16, 0.25, False),
        ("pack", f32, bf16, 1.0, False), ("unpack", f32, bf16, 0.25, False),
        ("pack", f32, f32, 1.0, True),
        # where a 16-bit unpack's time goes: the same copies with and without the scale
        ("unpack", bf16, bf16, 1.0, False), ("pack", bf16, bf16, 0.25, False),
    ]
    copies = {}
    for op, dtype, bucket_dtype, scale, shifted in cases:
        base = [torch.randn(numel([s]) + shifted, generator=g).to(dtype).to(device) for s in shapes]
        tensors = [b[1:] if shifted else b for b in base]
        bucket = torch.randn(n, generator=g).to(bucket_dtype).to(device)
        if op == "pack":
            t = timer(lambda: C.pack(tensors, bucket, scale))
        else:
            t = timer(lambda: C.unpack(bucket, tensors, scale))
        moved = n * (torch.empty((), dtype=dtype).element_size() +
                     torch.empty((), dtype=bucket_dtype).element_size())
        # the copy baseline: the same number of bytes read and written by one plain copy
        copy_dtype = dtype if dtype == bucket_dtype else torch.float32
        copy_elems = moved // (2 * torch.empty((), dtype=copy_dtype).element_size())
        key = (copy_dtype, copy_elems)
        if key not in copies:
            src = torch.randn(copy_elems, generator=g).to(copy_dtype).to(device)
            dst = torch.empty_like(src)
            copies[key] = best_copy(timer, src, dst)
        c = copies[key]
        rows.append({
            "op": op, "scale": scale, "tensors": str(dtype).replace("torch.", ""),
            "bucket": str(bucket_dtype).replace("torch.", ""),
            "path": "scalar (tensors 1 element off the bucket's alignment)" if shifted else "vector",
            "model": model, "elements": n, "launches": -(-len(shapes) // C.MAX_TENSORS_PER_LAUNCH),
            "MB_moved": round(moved / 1e6, 2), "kernel_us": round(t["us"], 2), "copy_us": round(c["us"], 2),
            "kernel_GBps": round(moved / t["us"] / 1e3, 1), "copy_GBps": round(moved / c["us"] / 1e3, 1),
            "fraction_of_copy": round(c["us"] / t["us"], 3), "graph": t["graph"],
            "copy_how": c["how"], "copies_us": c["all_us"],
            "target": TARGET if (not shifted and dtype == bucket_dtype and device.type == "cuda"
                                 and scale == (1.0 if op == "pack" else 0.25)) else None,
        })
        del base, tensors, bucket
    return rows


# The compressed-delta kernels: (op, codec, with residuals) and the bytes each element moves
# (float32 tensors): encode reads x and the anchor (and the residual, which it writes back) and
# writes the codes; apply reads the codes and the anchor and writes x and the anchor.
# "topk": 41 of each 2048 elements kept, 2-bit values (112-byte records).
CODEC_CASES = [("encode", "int8", True, 4 + 4 + 4 + 4 + 1), ("apply", "int8", False, 1 + 4 + 4 + 4),
               ("encode", "bf16", False, 4 + 4 + 2), ("apply", "bf16", False, 2 + 4 + 4 + 4),
               ("encode", "int4", True, 4 + 4 + 4 + 4 + 0.5), ("apply", "int4", False, 0.5 + 4 + 4 + 4),
               ("encode", "int2", True, 4 + 4 + 4 + 4 + 0.25), ("apply", "int2", False, 0.25 + 4 + 4 + 4),
               ("encode", "topk", True, 4 + 4 + 4 + 4 + 112 / 2048),
               ("apply", "topk", False, 112 / 2048 + 4 + 4 + 4)]
TOPK_SLOTS, TOPK_VALUES = 41, "int2"


def codec_ops(C, codec):
    """(encoded bytes of n, encode, apply) for a CODEC_CASES codec."""
    if codec == "topk":
        return (lambda n: C.topk_encoded_bytes(n, TOPK_SLOTS, TOPK_VALUES),
                lambda x, a, r, out: C.encode_topk(x, a, r, out, TOPK_SLOTS, TOPK_VALUES),
                lambda out, x, a: C.apply_topk(out, 1, x, a, TOPK_SLOTS, TOPK_VALUES, 1.0))
    return (lambda n: C.encoded_bytes(codec, n),
            lambda x, a, r, out: C.encode_delta(x, a, r, out, codec),
            lambda out, x, a: C.apply_delta(out, x, a, codec))


def time_codec_kernels(device: torch.device, model: str, repeats: int, warmup: int) -> list:
    """encode_delta and apply_delta of the model's float32 parameters (in tables of at most
    MAX_TENSORS_PER_DELTA_LAUNCH tensors) against a float32 copy of the same bytes."""
    from hvd_hier.comm.extension import extension

    C = extension()
    timer = Timer(device, repeats, warmup)
    shapes = MODELS[model]
    n = numel(shapes)
    g = torch.Generator().manual_seed(1)
    step = C.MAX_TENSORS_PER_DELTA_LAUNCH
    x = [torch.randn(numel([s]), generator=g).to(device) for s in shapes]
    a = [t + 0.01 * torch.randn(t.numel(), generator=g).to(device) for t in x]
    r = [torch.zeros_like(t) for t in x]
    tables = [slice(i, i + step) for i in range(0, len(shapes), step)]
    rows = []
    for op, codec, with_residual, per_element in CODEC_CASES:
        size, encode, apply = codec_ops(C, codec)
        codes = [torch.zeros(size(sum(t.numel() for t in x[sl])), dtype=torch.uint8,
                             device=device) for sl in tables]
        for sl, out in zip(tables, codes):  # valid codes for apply
            encode(x[sl], a[sl], [], out)
        if op == "encode":
            t = timer(lambda: [encode(x[sl], a[sl], r[sl] if with_residual else [], out)
                               for sl, out in zip(tables, codes)])
        else:
            t = timer(lambda: [apply(out, x[sl], a[sl]) for sl, out in zip(tables, codes)])
        moved = int(n * per_element)
        src = torch.randn(moved // 8, generator=g).to(device)
        c = best_copy(timer, src, torch.empty_like(src))
        rows.append({
            "op": op, "scale": 1.0, "tensors": "float32",
            "bucket": f"{codec} codes" + (" + residual" if with_residual else ""),
            "path": "codec", "model": model, "elements": n, "launches": len(tables),
            "MB_moved": round(moved / 1e6, 2), "kernel_us": round(t["us"], 2),
            "copy_us": round(c["us"], 2), "kernel_GBps": round(moved / t["us"] / 1e3, 1),
            "copy_GBps": round(moved / c["us"] / 1e3, 1),
            "fraction_of_copy": round(c["us"] / t["us"], 3), "graph": t["graph"],
            "copy_how": c["how"], "copies_us": c["all_us"], "target": None})
        del codes, src
    return rows


def fmt_tests(tests: dict) -> list:
    if "collected" in tests:
        return [("tests/gpu", f"{tests['collected']} tests collected; not run (cpu rehearsal: "
                              "`make test` runs them on the CPU through the CUDA kernel's code)")]
    rows = []
    for name, r in sorted(tests.get("files", {}).items()):
        rows.append((f"tests/gpu: {name}", f"{r['passed']} passed, {r['failed']} failed, "
                                           f"{r['skipped']} skipped ({r['seconds']:.1f} s)"))
    t = tests.get("total", {})
    rows.append(("tests/gpu: total", f"{t.get('passed', 0)} passed, {t.get('failed', 0)} failed, "
                                     f"{t.get('skipped', 0)} skipped in {tests['seconds']} s"))
    return rows


def markdown(report: dict) -> str:
    """The report as a markdown table (what gpu_check.md holds and the script prints last)."""
    m, rehearsal = report["machine"], report["rehearsal"]
    title = "hvd_hier GPU check" + (" — CPU REHEARSAL (no GPU: CUDA steps skipped)" if rehearsal else "")
    lines = [f"## {title}", "", "| item | result |", "|---|---|"]
    if rehearsal:
        card = "none (cpu rehearsal)"
    else:
        card = (f"{m['card']}, sm_{m['capability'].replace('.', '')}, {m['multiprocessors']} SMs, "
                f"{m['memory_gib']} GiB; driver / max SM, memory clocks: {m.get('nvidia_smi', '?')}")
    lines.append(f"| card | {card} |")
    lines.append(f"| date | {m['date']} |")
    lines.append(f"| software | torch {m['torch']} (CUDA {m['torch_cuda']}), Python {m['python']}, "
                 f"{m['cpus']} CPUs |")
    b = report["build"]
    lines.append("| build | " + (f"skipped (cpu rehearsal): configure checked for sm_{b['arch']}, "
                                  f"CPU extension reused ({b['seconds']} s)" if rehearsal else
                                  f"sm_{b['arch']} with CUDA in {b['seconds']} s") + " |")
    for item, result in fmt_tests(report["tests"]):
        lines.append(f"| {item} | {result} |")
    status = "PASSED" if report["ok"] else "FAILED"
    lines.append(f"| overall | **{status}** in {report['seconds']} s |")
    if report["timings"]:
        where = ("CPU, host timers, small model: checks the harness only, not a GPU figure"
                 if rehearsal else "CUDA events, median of each op's graph replays; the copy is the "
                 "fastest of torch's copy_ in a graph, copy_ eagerly and an elementwise kernel")
        lines += ["", f"Kernel time against a copy of the same bytes ({where}):", "",
                  "| op | tensors → bucket | scale | path | model | MB moved | kernel µs | copy µs | GB/s | "
                  "fraction of copy | target |",
                  "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|"]
        for r in report["timings"]:
            pair = (f"{r['tensors']} → {r['bucket']}" if r["op"] in ("pack", "encode")
                    else f"{r['bucket']} → {r['tensors']}")
            if r["target"] is None:
                target = "—"
            else:
                target = f"≥ {r['target']}: " + ("met" if r["fraction_of_copy"] >= r["target"] else "**MISSED**")
            lines.append(f"| {r['op']} | {pair} | {r.get('scale', 1.0):g} | {r['path'].split(' ')[0]} | {r['model']} | {r['MB_moved']} | "
                         f"{r['kernel_us']} | {r['copy_us']} | {r['kernel_GBps']} | "
                         f"{r['fraction_of_copy']} | {target} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--build-dir", required=True, type=Path)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--build-ms", type=int, default=0)
    ap.add_argument("--cpu-rehearsal", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    start = time.monotonic()
    rehearsal = args.cpu_rehearsal
    if not rehearsal and not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA device; use --cpu-rehearsal")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"rehearsal": rehearsal, "machine": machine(rehearsal),
              "build": {"arch": args.arch, "seconds": round(args.build_ms / 1e3, 1)},
              "extension": check_extension(args.build_dir, rehearsal)}
    print(f"== tests/gpu ({'collect only' if rehearsal else 'on the GPU'})", flush=True)
    report["tests"] = run_tests(args.out, args.build_dir, rehearsal)
    report["timings"] = []
    if True:  # timed even when a test failed: one run on a borrowed GPU should say everything
        if rehearsal:
            device, model, repeats, warmup = torch.device("cpu"), "transformer_block", args.repeats or 2, 1
        else:
            device, model, repeats, warmup = torch.device("cuda"), "resnet50", args.repeats or 200, 20
        print(f"== timings on {device} ({model}, median of {repeats})", flush=True)
        report["timings"] = (time_kernels(device, model, repeats, warmup)
                             + time_codec_kernels(device, model, repeats, warmup))
    report["ok"] = report["tests"]["ok"] and bool(report["timings"])
    report["seconds"] = round(time.monotonic() - start + args.build_ms / 1e3, 1)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "gpu_check.md").write_text(table)
    print()
    print(table, end="")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
