"""methods/pkt.py: probabilistic knowledge transfer (RepDistiller distiller_zoo/PKT.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from icckd_cli.methods.pkt import pkt_loss
from tests.featref import TIMM_STUDENT, distill_digits, last_metrics, maps, rel, t64

EPS = 1e-7


def reference(s: np.ndarray, t: np.ndarray) -> float:
    def probs(f: np.ndarray) -> np.ndarray:
        x = f / (np.sqrt((f**2).sum(axis=1, keepdims=True)) + EPS)
        sim = (x @ x.T + 1) / 2
        return sim / sim.sum(axis=1, keepdims=True)

    ps, pt = probs(s), probs(t)
    return float(np.mean(pt * np.log((pt + EPS) / (ps + EPS))))


@pytest.mark.parametrize(("batch", "ds", "dt"), [(2, 3, 5), (16, 64, 256), (40, 8, 8)])
def test_pkt_matches_the_numpy_reference(batch: int, ds: int, dt: int) -> None:
    s, t = maps(batch + ds, (batch, ds), (batch, dt))
    assert rel(pkt_loss(t64(s), t64(t)), reference(s, t)) <= 1e-6


def test_identical_features_give_zero() -> None:
    (s,) = maps(0, (8, 16))
    assert abs(float(pkt_loss(t64(s), t64(s)))) < 1e-12


def test_distill_pkt_on_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "pkt")
    assert r.code == 0, r.err
    row = last_metrics(tmp_path / "run")
    assert row["epoch"] == 1 and math.isfinite(row["train_pkt"]) and row["train_pkt"] > 0
    assert row["train_ce"] > 0 and "train_kd" not in row


def test_distill_pkt_to_a_timm_student(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "pkt", "--arch", TIMM_STUDENT)
    assert r.code == 0, r.err
    assert math.isfinite(last_metrics(tmp_path / "run")["train_pkt"])
