"""What can be checked in this process, without horovodrun."""

import os
import subprocess
import sys

import pytest
import torch

import horovod.torch as hvd
import hvd_hier


def test_needs_horovod_initialised():
    assert not hvd.is_initialized()
    model = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError) as info:
        hvd_hier.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1))
    assert str(info.value) == ("hvd_hier.DistributedOptimizer: Horovod is not initialised; call "
                               "hvd.init() first")


@pytest.mark.parametrize("preset,expected", [(None, "1"), ("0", "0"), ("1", "1")])
def test_import_enables_dynamic_process_sets_unless_told_otherwise(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "HOROVOD_DYNAMIC_PROCESS_SETS"}
    if preset is not None:
        env["HOROVOD_DYNAMIC_PROCESS_SETS"] = preset
    out = subprocess.run(
        [sys.executable, "-c", "import os, hvd_hier; print(os.environ['HOROVOD_DYNAMIC_PROCESS_SETS'])"],
        env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == expected
