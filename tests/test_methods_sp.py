"""methods/sp.py: similarity-preserving KD (RepDistiller distiller_zoo/SP.py) in float64."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from icckd_cli.methods.sp import sp_loss
from tests.featref import TIMM_STUDENT, distill_digits, last_metrics, maps, rel, t64


def reference(s: np.ndarray, t: np.ndarray) -> float:
    b = s.shape[0]
    grams = []
    for f in (s, t):
        x = f.reshape(b, -1)
        g = np.array([[x[i] @ x[j] for j in range(b)] for i in range(b)])
        grams.append(g / np.linalg.norm(g, axis=1, keepdims=True))
    return float(((grams[1] - grams[0]) ** 2).sum() / b**2)


@pytest.mark.parametrize(
    ("s", "t"), [((2, 4, 3, 3), (2, 8, 3, 3)), ((7, 64, 8, 8), (7, 128, 4, 4)), ((16, 10), (16, 5))]
)
def test_sp_matches_the_numpy_reference(s: tuple, t: tuple) -> None:
    fs, ft = maps(len(s) + s[0], s, t)
    assert rel(sp_loss(t64(fs), t64(ft)), reference(fs, ft)) <= 1e-6


def test_distill_sp_on_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "sp")
    assert r.code == 0, r.err
    row = last_metrics(tmp_path / "run")
    assert row["epoch"] == 1 and math.isfinite(row["train_sp"]) and row["train_sp"] > 0
    assert row["train_ce"] > 0 and "train_kd" not in row


def test_distill_sp_to_a_timm_student(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "sp", "--arch", TIMM_STUDENT)
    assert r.code == 0, r.err
    assert math.isfinite(last_metrics(tmp_path / "run")["train_sp"])
