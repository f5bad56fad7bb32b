"""The ``isa`` fixture: a test whose result depends on the kernel path runs under each CPU
instruction-set mode (``@pytest.mark.usefixtures("isa")``), or draws the mode among its
pairwise parameters (``indirect=["isa"]``). Tests of constants and error messages do not."""

import pytest

from hvd_hier.comm.extension import extension
from kernel_isa import ISAS


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test with the kernels in mode ``request.param``, then back to "auto"."""
    C = extension()
    C.set_cpu_kernel_isa(request.param)
    if request.param != "auto":
        assert C.cpu_kernel_isa() == request.param
    yield request.param
    C.set_cpu_kernel_isa("auto")
