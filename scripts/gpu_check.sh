#!/usr/bin/env bash
# One-shot GPU check of hvd_hier's CUDA kernels (docs/GPU.md). On a machine with one NVIDIA
# GPU and a python3 that has a CUDA build of torch, nvcc, cmake, pybind11, numpy and pytest
# (no Horovod, no network needed), it:
#   1. builds hvd_hier._C with CUDA for this card's architecture into a build folder (the
#      system's packages are not touched);
#   2. runs tests/gpu on the GPU: every kernel against the CPU loop and a float64 reference,
#      and the averagers with a stand-in collective;
#   3. times pack and unpack at ResNet-50 sizes against a device-to-device copy;
#   4. writes gpu_check.json and gpu_check.md (and the logs) into OUT_DIR, printing the
#      table last.
# Exits non-zero on any failure. --cpu-rehearsal runs what needs no GPU (argument handling,
# the CMake configure step, the test collection, the timing harness on CPU, the report), with
# the CUDA steps reported as skipped; make test runs it so that the script cannot rot.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=gpu_check.sh

usage() {
  cat <<EOF
usage: scripts/$NAME [--cpu-rehearsal] [--python PY] [--build-dir DIR] [--arch SM] [--jobs N] OUT_DIR

  OUT_DIR          where gpu_check.json, gpu_check.md and the logs are written (created)
  --cpu-rehearsal  no GPU: check everything that needs none; CUDA steps are reported skipped
  --python PY      the interpreter with torch (default: \$PYTHON or python3)
  --build-dir DIR  the build folder (default: build/gpu-check in the repository)
  --arch SM        CUDA architecture, e.g. 90 or 90a (default: the card's compute capability)
  --jobs N         parallel compile jobs (default: the number of processors)
EOF
}

die_usage() {
  echo "$NAME: $1" >&2
  usage >&2
  exit 2
}

fail() {
  echo "$NAME: FAILED: $1" >&2
  exit 1
}

PY=${PYTHON:-python3}
BUILD=""
ARCH=""
JOBS=$(nproc 2>/dev/null || echo 2)
REHEARSAL=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --cpu-rehearsal) REHEARSAL=1 ;;
    --python | --build-dir | --arch | --jobs)
      [ $# -ge 2 ] && [ -n "$2" ] || die_usage "$1 needs a value"
      case "$1" in
        --python) PY=$2 ;;
        --build-dir) BUILD=$2 ;;
        --arch) ARCH=$2 ;;
        --jobs) JOBS=$2 ;;
      esac
      shift ;;
    -*) die_usage "unknown option '$1'" ;;
    *)
      [ -z "$OUT" ] || die_usage "one OUT_DIR only, got '$OUT' and '$1'"
      OUT=$1 ;;
  esac
  shift
done
[ -n "$OUT" ] || die_usage "missing OUT_DIR"
if [ -n "$ARCH" ] && ! [[ $ARCH =~ ^[0-9]{2,3}a?$ ]]; then
  die_usage "--arch must be a compute capability such as 90 or 90a, got '$ARCH'"
fi
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die_usage "--jobs must be a positive integer, got '$JOBS'"

PYBIN=$(command -v "$PY" 2>/dev/null) || fail "python '$PY' not found"
# cmake, ninja and nvcc that live beside the interpreter (a venv's, say) come first.
export PATH="$(dirname "$PYBIN"):$PATH"
BUILD=${BUILD:-$ROOT/build/gpu-check}
mkdir -p "$OUT" "$BUILD"
OUT=$(cd "$OUT" && pwd)
BUILD=$(cd "$BUILD" && pwd)
LOG=$OUT/build.log
: >"$LOG"

echo "== $NAME: python $PYBIN, build folder $BUILD, results in $OUT"
"$PYBIN" -c 'import torch, numpy, pytest, pybind11' 2>>"$LOG" ||
  fail "$PYBIN lacks one of torch, numpy, pytest, pybind11 (see $LOG)"

if [ "$REHEARSAL" = 1 ]; then
  CUDA=0
  ARCH=${ARCH:-90}
else
  CUDA=1
  probe=$("$PYBIN" -c 'import torch
ok = torch.cuda.is_available() and torch.version.cuda is not None
print(int(ok), "%d%d" % torch.cuda.get_device_capability() if ok else "-", torch.version.cuda)')
  read -r have_cuda cap torch_cuda <<<"$probe"
  [ "$have_cuda" = 1 ] || fail "torch sees no CUDA device (torch.cuda.is_available() is False, torch CUDA '$torch_cuda'); on a machine without a GPU run with --cpu-rehearsal"
  ARCH=${ARCH:-$cap}
  NVCC=${CUDACXX:-$(command -v nvcc || true)}
  for guess in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do
    [ -n "$NVCC" ] && break
    [ -x "$guess" ] && NVCC=$guess
  done
  [ -n "$NVCC" ] || fail "nvcc not found (set CUDACXX or put it on PATH)"
fi
command -v cmake >/dev/null || fail "cmake not found"
GEN="Unix Makefiles"
command -v ninja >/dev/null && GEN=Ninja

# 1. Configure and build the extension into $BUILD/python/hvd_hier, beside a copy of the
# package's Python files: PYTHONPATH=$BUILD/python imports this build and nothing else.
PKG=$BUILD/python/hvd_hier
mkdir -p "$PKG"
rm -f "$PKG"/_C*.so
cmake_args=(-S "$ROOT" -B "$BUILD/cmake" -G "$GEN" -DPython_EXECUTABLE="$PYBIN"
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PKG" -DCMAKE_BUILD_TYPE=Release
  -DHVD_HIER_WITH_CUDA=$CUDA -DHVD_HIER_CUDA_ARCHITECTURES="$ARCH")
[ "$CUDA" = 1 ] && cmake_args+=(-DCMAKE_CUDA_COMPILER="$NVCC")
start_ms=$(($(date +%s%N) / 1000000))
echo "== configure (CUDA $CUDA, sm_$ARCH, $GEN)"
cmake "${cmake_args[@]}" >>"$LOG" 2>&1 || { tail -30 "$LOG" >&2; fail "CMake configure failed (see $LOG)"; }
if [ "$REHEARSAL" = 1 ]; then
  # No CUDA build without a GPU's torch: take the installed CPU extension.
  so=$("$PYBIN" -c 'import hvd_hier._C as c; print(c.__file__)' 2>>"$LOG") ||
    fail "--cpu-rehearsal needs an installed hvd_hier._C (make install)"
  cp "$so" "$PKG/"
  echo "== build skipped (cpu rehearsal): using $so"
else
  echo "== build (-j $JOBS)"
  cmake --build "$BUILD/cmake" -j "$JOBS" >>"$LOG" 2>&1 || { tail -40 "$LOG" >&2; fail "build failed (see $LOG)"; }
fi
build_ms=$(($(date +%s%N) / 1000000 - start_ms))
cp "$ROOT"/hvd_hier/*.py "$PKG/"
ls "$PKG"/_C*.so >/dev/null 2>&1 || fail "no extension in $PKG after the build"

# 2-4. Tests, timings and the report.
driver=(--out "$OUT" --build-dir "$BUILD" --arch "$ARCH" --build-ms "$build_ms")
[ "$REHEARSAL" = 1 ] && driver+=(--cpu-rehearsal)
PYTHONPATH="$BUILD/python" "$PYBIN" "$ROOT/scripts/gpu_check.py" "${driver[@]}"
