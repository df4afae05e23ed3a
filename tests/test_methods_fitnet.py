"""methods/fitnet.py: the hint (RepDistiller distiller_zoo/FitNet.py, HintLoss) in float64
against numpy, and the regressor's three cases (RepDistiller models/util.py ConvReg)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icckd_cli.base.errors import UsageError
from icckd_cli.methods.fitnet import hint_loss, regressor
from tests.featref import maps, rel, t64


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (8, 16, 8, 8), (5, 64, 2, 3)])
def test_hint_is_the_mean_squared_error(shape: tuple[int, ...]) -> None:
    s, t = maps(sum(shape), shape, shape)
    expected = float(np.mean((s - t) ** 2))
    assert rel(hint_loss(t64(s), t64(t)), expected) <= 1e-6


@pytest.mark.parametrize(
    ("s", "t"),
    [((16, 32, 32), (32, 16, 16)), ((64, 8, 8), (128, 16, 16)), ((32, 8, 8), (64, 6, 6))],
)
def test_regressor_maps_the_student_onto_the_teacher(s: tuple, t: tuple) -> None:
    out = regressor(s, t)(torch.randn(2, *s))
    assert tuple(out.shape[1:]) == t and out.min() >= 0  # conv, BN, ReLU


def test_regressor_refuses_a_smaller_student_map() -> None:
    with pytest.raises(UsageError, match=r"^fitnet: the student's 8x8 map cannot be regressed"):
        regressor((16, 8, 8), (16, 12, 12))
