#!/usr/bin/env bash
# Build (once) and install Horovod 0.28.1 into the given Python environment.
#
# Horovod's last release needs two fixes to build against PyTorch >= 2.1 with CMake >= 4:
#   * C++17 instead of C++14 in CMakeLists.txt and horovod/torch/CMakeLists.txt
#   * CMAKE_POLICY_VERSION_MINIMUM=3.5 so CMake accepts the bundled Gloo
# and the patches in scripts/patches/ are applied (each file says what it fixes).
# The wheel is cached outside the repository, keyed by Horovod, the patches, torch, Python
# and the GPU flavour, so that later installs take seconds; an installed Horovod is replaced
# when its key differs (a file HVD_HIER_BUILD in the horovod package holds it).
#
# Usage: scripts/build_horovod.sh PYTHON
# Environment:
#   HVD_HIER_CACHE   cache folder (default: ~/.cache/hvd_hier)
#   HOROVOD_VERSION  default 0.28.1
set -euo pipefail

PY=${1:?usage: build_horovod.sh PYTHON}
HOROVOD_VERSION=${HOROVOD_VERSION:-0.28.1}
CACHE=${HVD_HIER_CACHE:-$HOME/.cache/hvd_hier}

torch_ver=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
py_ver=$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
torch_cuda=$("$PY" -c 'import torch; print(torch.version.cuda or "")')

# NCCL: the nvidia-nccl wheel that CUDA builds of torch depend on, $HOROVOD_NCCL_HOME or
# $NCCL_HOME, or a system library.
nccl_dir=""
if [[ -n "$torch_cuda" ]]; then
    nccl_dir=$("$PY" - <<'PYEOF' 2>/dev/null || true
import os
try:
    import nvidia.nccl as n
    d = list(n.__path__)[0]
    print(d if os.path.exists(os.path.join(d, "include", "nccl.h")) else "")
except ImportError:
    print("")
PYEOF
)
    nccl_dir=${nccl_dir:-${HOROVOD_NCCL_HOME:-${NCCL_HOME:-}}}
    if [[ -z "$nccl_dir" ]] && ldconfig -p 2>/dev/null | grep 'libnccl\.so' >/dev/null; then
        nccl_dir=system
    fi
fi
flavour=cpu
if [[ -n "$nccl_dir" ]]; then
    flavour="cuda${torch_cuda}-nccl"
fi

patches=("$(cd "$(dirname "$0")" && pwd)/patches/horovod-$HOROVOD_VERSION-"*.patch)
[[ -e "${patches[0]}" ]] || patches=()
patch_sum=$(cat /dev/null "${patches[@]}" | sha256sum | cut -c1-10)
key="horovod-${HOROVOD_VERSION}-p${patch_sum}-torch${torch_ver}-${py_ver}-${flavour}"
wheel_dir="$CACHE/wheels/$key"

installed=$("$PY" - <<'PYEOF' 2>/dev/null || true
import os
import horovod
import horovod.torch  # noqa: F401  (the extension loads)
marker = os.path.join(os.path.dirname(horovod.__file__), "HVD_HIER_BUILD")
print(open(marker).read().strip() if os.path.exists(marker) else "unmarked")
PYEOF
)
if [[ "$installed" == "$key" ]]; then
    echo "build_horovod: horovod $HOROVOD_VERSION ($key) already installed in $PY"
    exit 0
fi

if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
    echo "build_horovod: no cached wheel for $key; building (about 8 minutes on 2 cores)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$PY" -m pip download --no-deps --no-binary :all: -d "$work" "horovod==$HOROVOD_VERSION"
    tar -xzf "$work"/horovod-"$HOROVOD_VERSION".tar.gz -C "$work"
    src="$work/horovod-$HOROVOD_VERSION"
    sed -i 's/CMAKE_CXX_STANDARD 14/CMAKE_CXX_STANDARD 17/' \
        "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
    grep -q 'CMAKE_CXX_STANDARD 17' "$src/CMakeLists.txt"
    grep -q 'CMAKE_CXX_STANDARD 17' "$src/horovod/torch/CMakeLists.txt"
    for patch in "${patches[@]}"; do
        echo "build_horovod: applying $(basename "$patch")"
        (cd "$src" && git apply --verbose "$patch")
    done

    export CMAKE_POLICY_VERSION_MINIMUM=3.5
    export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
    export HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
    if [[ "$flavour" != cpu ]]; then
        export HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED
        if [[ "$nccl_dir" != system ]]; then
            export HOROVOD_NCCL_INCLUDE="$nccl_dir/include"
            # the wheel ships libnccl.so.2 only; the build links against libnccl.so
            mkdir -p "$work/nccl-lib"
            ln -sf "$(ls "$nccl_dir"/lib/libnccl.so* | head -n 1)" "$work/nccl-lib/libnccl.so"
            export HOROVOD_NCCL_LIB="$work/nccl-lib"
        fi
        echo "build_horovod: building with NCCL from $nccl_dir"
    fi
    mkdir -p "$wheel_dir.tmp"
    MAKEFLAGS="-j$(nproc)" "$PY" -m pip wheel --no-deps --no-build-isolation -w "$wheel_dir.tmp" "$src"
    rm -rf "$wheel_dir"
    mv "$wheel_dir.tmp" "$wheel_dir"
fi

"$PY" -m pip install --no-deps --force-reinstall "$wheel_dir"/horovod-*.whl
"$PY" -c 'import horovod, os, sys; open(os.path.join(os.path.dirname(horovod.__file__), "HVD_HIER_BUILD"), "w").write(sys.argv[1] + "\n")' "$key"
# horovod's own runtime requirements (it was installed without deps)
"$PY" -m pip install cloudpickle psutil pyyaml packaging cffi
echo "build_horovod: installed $(ls "$wheel_dir"/horovod-*.whl)"
