"""The kernels' CPU instruction-set modes: the best CPU loop for this processor, the portable
one, and the CUDA kernels' own thread code run on the CPU (its vector, alignment and
block-wide paths). ``tests/unit/conftest.py`` makes them the ``isa`` fixture."""

ISAS = ["auto", "baseline", "cuda_emulation"]
