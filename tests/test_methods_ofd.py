"""methods/ofd.py: the overhaul of feature distillation (mdistiller distillers/OFD.py) in
float64: the margins against numerical integration, the partial L2 against numpy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from icckd_cli.methods.ofd import margin, margins, ofd_loss, partial_l2
from tests.featref import TIMM_STUDENT, distill_digits, last_metrics, maps, pool, rel, t64


def integrated_margin(s: float, m: float) -> float:
    """E[x | x < 0] for x ~ N(m, s^2) by the trapezoid rule on [m - 14 s, 0]."""
    x = np.linspace(min(m, 0.0) - 14 * s, 0.0, 2_000_001)
    density = np.exp(-((x - m) ** 2) / (2 * s * s))
    return float(np.trapezoid(x * density, x) / np.trapezoid(density, x))


@pytest.mark.parametrize(("s", "m"), [(1.0, 0.0), (0.5, 0.3), (2.0, -1.0), (0.3, 0.8)])
def test_margin_is_the_expected_negative_value(s: float, m: float) -> None:
    assert math.isclose(margin(s, m), integrated_margin(s, m), rel_tol=1e-6)
    assert math.isclose(margin(-s, m), margin(s, m))  # the BN weight's sign does not matter


def test_margin_where_negatives_are_rare_is_minus_three_sigma() -> None:
    assert margin(0.5, 2.0) == -1.5  # P(x < 0) = P(z < -4) < 0.001


def reference(g_s: list, g_t: list, ms: list) -> float:
    n, total = len(g_s), 0.0
    for i, (s, t, m) in enumerate(zip(g_s, g_t, ms, strict=True)):
        t = pool(t, s.shape[2])
        loss = (
            np.where((s > m) & (t <= m), (s - m) ** 2, 0.0)
            + np.where((s > t) & (t > m) & (t <= 0), (s - t) ** 2, 0.0)
            + np.where(t > 0, (s - t) ** 2, 0.0)
        )
        total += loss.mean(axis=0).sum() / 2 ** (n - i - 1)
    return total


@pytest.mark.parametrize(
    "pairs",
    [
        [((2, 3, 4, 4), (2, 3, 4, 4))],
        [
            ((4, 8, 8, 8), (4, 8, 16, 16)),
            ((4, 16, 4, 4), (4, 16, 4, 4)),
            ((4, 32, 2, 2), (4, 32, 4, 4)),
        ],
    ],
)
def test_ofd_matches_the_numpy_reference(pairs: list) -> None:
    g_s = maps(1, *[s for s, _ in pairs])
    g_t = maps(2, *[t for _, t in pairs])
    rng = np.random.default_rng(3)
    norms = [(rng.uniform(0.2, 2, s[1]), rng.normal(0, 1, s[1])) for s, _ in pairs]
    ms = [t.double() for t in margins(norms)]
    got = ofd_loss([t64(a) for a in g_s], [t64(a) for a in g_t], ms)
    assert rel(got, reference(g_s, g_t, [m.numpy() for m in ms])) <= 1e-6


def test_partial_l2_ignores_teacher_values_below_the_margin_the_student_is_below() -> None:
    s, t, m = t64(np.array([[[[-2.0]]]])), t64(np.array([[[[-1.5]]]])), t64(np.array([[[[-1.0]]]]))
    assert float(partial_l2(s, t, m)) == 0.0  # both under the margin: nothing to learn
    assert float(partial_l2(-s, t, m)) == 9.0  # (2 - (-1))^2: the student must come down


def test_distill_ofd_on_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "ofd")
    assert r.code == 0, r.err
    row = last_metrics(tmp_path / "run")
    assert row["epoch"] == 1 and math.isfinite(row["train_ofd"]) and row["train_ofd"] > 0
    assert row["train_ce"] > 0 and "train_kd" not in row


def test_distill_ofd_to_a_timm_student(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "ofd", "--arch", TIMM_STUDENT)
    assert r.code == 0, r.err
    assert math.isfinite(last_metrics(tmp_path / "run")["train_ofd"])
