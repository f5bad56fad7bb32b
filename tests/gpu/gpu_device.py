"""Which code the device tests run: the CUDA kernels on a GPU, or (on machines without one)
the CUDA kernel's own thread code run on the CPU through ``set_cpu_kernel_isa("cuda_emulation")``.

``HVD_HIER_GPU_CHECK_DEVICE``: ``cuda`` (a GPU is required: the GPU check sets this, so a
missing GPU or a CPU-only build fails instead of being emulated), ``cuda_emulation``, or
``auto`` (the default: ``cuda`` where there is one).
"""

import contextlib
import os

import torch

from hvd_hier.comm.extension import extension

C = extension()


def kernel_device() -> str:
    want = os.environ.get("HVD_HIER_GPU_CHECK_DEVICE", "auto")
    have_cuda = torch.cuda.is_available() and C.built_with_cuda()
    if want == "auto":
        return "cuda" if have_cuda else "cuda_emulation"
    if want == "cuda" and not have_cuda:
        raise RuntimeError(
            f"HVD_HIER_GPU_CHECK_DEVICE=cuda, but torch.cuda.is_available() is "
            f"{torch.cuda.is_available()} and hvd_hier._C.built_with_cuda() is {C.built_with_cuda()}")
    if want not in ("cuda", "cuda_emulation"):
        raise ValueError(f"HVD_HIER_GPU_CHECK_DEVICE must be cuda, cuda_emulation or auto, got {want!r}")
    return want


KIND = kernel_device()
DEVICE = torch.device("cuda") if KIND == "cuda" else torch.device("cpu")


@contextlib.contextmanager
def cpu_path():
    """Run CPU tensors through the CPU loop (the reference path), whatever the test's mode."""
    before = C.cpu_kernel_isa()
    C.set_cpu_kernel_isa("auto")
    try:
        yield
    finally:
        C.set_cpu_kernel_isa("cuda_emulation" if before == "cuda_emulation" else "auto")


def synchronize():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
