import sys
from pathlib import Path

import pytest

from gpu_device import C, KIND

BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")  # shapes.py
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)


@pytest.fixture(autouse=True)
def kernel_mode():
    """CPU tensors run the CUDA kernel's code in emulation mode; on a GPU nothing changes."""
    C.set_cpu_kernel_isa("cuda_emulation" if KIND == "cuda_emulation" else "auto")
    yield KIND
    C.set_cpu_kernel_isa("auto")
