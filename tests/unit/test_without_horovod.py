"""hvd_hier without Horovod (the GPU check's machine has none): the package imports, the
kernels and averagers work with a collective of their own, and the names that need Horovod
say so when used."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    import importlib.abc, sys

    class NoHorovod(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "horovod" or name.startswith("horovod."):
                raise ImportError(f"No module named {name!r} (hidden by the test)")
            return None

    sys.meta_path.insert(0, NoHorovod())
    sys.path.insert(0, sys.argv[1])
    import torch
    import hvd_hier
    from hvd_hier.reduce.buckets import BucketAverager
    from hvd_hier.reduce.flat import FlatAverager
    from standin import PeersSum

    assert "horovod" not in sys.modules
    assert hvd_hier.HierSchedule is not None and hvd_hier.Level is not None
    x = [torch.full((5,), 2.0), torch.full((3,), -1.0)]
    BucketAverager(x, 16, collective=PeersSum(4)).average(None, 4, "t")
    assert torch.equal(x[0], torch.full((5,), 2.75)) and torch.equal(x[1], torch.full((3,), -0.25))
    y = [torch.full((4,), 1.0)]
    FlatAverager(y, 1 << 20, collective=PeersSum(2)).average(None, 2, "t")
    assert torch.equal(y[0], torch.full((4,), 1.5))
    try:
        hvd_hier.DistributedOptimizer
    except ImportError as exc:
        print(exc)
    else:
        raise AssertionError("DistributedOptimizer without Horovod")
''')


def test_the_package_works_without_horovod():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "tests" / "gpu")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == (
        "hvd_hier.DistributedOptimizer needs Horovod, which could not be imported "
        "(No module named 'horovod' (hidden by the test))")
