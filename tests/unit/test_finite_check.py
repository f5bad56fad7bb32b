"""The non-finite check's local pass (``hvd_hier.reduce.nonfinite.all_finite``): every inf and NaN
found, whatever the dtype, and finite values whose sum overflows not mistaken for one."""

import pytest
import torch

from hvd_hier.reduce.nonfinite import all_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_non_finite_value_is_found(dtype, bad):
    tensors = [torch.randn(3, 4, dtype=dtype), torch.randn(1000, dtype=dtype),
               torch.zeros(0, dtype=dtype)]
    assert all_finite(tensors)
    for where in (0, 1):
        for index in (0, 7, -1):
            broken = [t.clone() for t in tensors]
            broken[where].view(-1)[index % broken[where].numel()] = bad
            assert not all_finite(broken), (where, index)


def test_inf_and_minus_inf_in_separate_tensors():
    assert not all_finite([torch.tensor([float("inf")]), torch.tensor([float("-inf")])])


@pytest.mark.parametrize("dtype,big", [(torch.float32, 3e38), (torch.float16, 60000.0),
                                       (torch.bfloat16, 3e38), (torch.float64, 1.7e308)])
def test_finite_values_whose_sum_overflows_are_finite(dtype, big):
    values = torch.full((4,), big, dtype=dtype)
    assert torch.isfinite(values).all() and not torch.isfinite(values.sum().float())
    assert all_finite([values])
    values[2] = float("nan")
    assert not all_finite([values])


def test_nothing_to_check():
    assert all_finite([]) and all_finite([torch.zeros(0)])
