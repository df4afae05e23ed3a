"""methods/fitnet.py: the hint (RepDistiller distiller_zoo/FitNet.py, HintLoss) in float64
against numpy, and the regressor's three cases (RepDistiller models/util.py ConvReg)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from icckd_cli.base.errors import UsageError
from icckd_cli.methods.fitnet import hint_loss, regressor
from tests.featref import TIMM_STUDENT, distill_digits, last_metrics, maps, rel, t64
from tests.helpers import one_error


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


def test_distill_fitnet_on_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "fitnet")
    assert r.code == 0, r.err
    row = last_metrics(tmp_path / "run")
    assert row["epoch"] == 1 and math.isfinite(row["train_fitnet"]) and row["train_fitnet"] > 0
    assert row["train_ce"] > 0 and "train_kd" not in row


def test_distill_fitnet_to_a_timm_student_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = distill_digits(capsys, tmp_path, "fitnet", "--arch", TIMM_STUDENT)
    assert r.code == 2
    assert one_error(r.err) == (
        "error: fitnet: the student's 4x4 map cannot be regressed onto the teacher's 16x16 "
        "(the student's must be as large, or half or twice the size); choose other layers "
        "with --feature-layers or another student"
    )
    assert not (tmp_path / "run").exists()
