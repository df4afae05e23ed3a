"""methods/at.py: attention transfer (RepDistiller distiller_zoo/AT.py) in float64 against numpy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from icckd_cli.methods.at import at_loss
from tests.featref import TIMM_STUDENT, distill_digits, last_metrics, maps, match, rel, t64
from tests.helpers import one_error


def reference(g_s: list[np.ndarray], g_t: list[np.ndarray], p: float) -> float:
    total = 0.0
    for s, t in zip(g_s, g_t, strict=True):
        s, t = match(s, t)
        a_s = (s**p).mean(axis=1).reshape(s.shape[0], -1)
        a_t = (t**p).mean(axis=1).reshape(t.shape[0], -1)
        a_s = a_s / np.linalg.norm(a_s, axis=1, keepdims=True)
        a_t = a_t / np.linalg.norm(a_t, axis=1, keepdims=True)
        total += float(((a_s - a_t) ** 2).mean())
    return total


@pytest.mark.parametrize("p", [2.0, 4.0])
@pytest.mark.parametrize(
    "pairs",
    [
        [((4, 16, 8, 8), (4, 32, 8, 8))],
        [((3, 16, 16, 16), (3, 64, 8, 8)), ((3, 32, 4, 4), (3, 8, 8, 8))],
        [((6, 16, 32, 32), (6, 32, 32, 32)), ((6, 32, 16, 16), (6, 64, 16, 16))],
    ],
)
def test_at_matches_the_numpy_reference(p: float, pairs: list) -> None:
    g_s = maps(1, *[s for s, _ in pairs])
    g_t = maps(2, *[t for _, t in pairs])
    got = at_loss([t64(a) for a in g_s], [t64(a) for a in g_t], p)
    assert rel(got, reference(g_s, g_t, p)) <= 1e-6


def test_distill_at_on_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "at")
    assert r.code == 0, r.err
    row = last_metrics(tmp_path / "run")
    assert row["epoch"] == 1 and math.isfinite(row["train_at"]) and row["train_at"] > 0
    assert row["train_ce"] > 0 and "train_kd" not in row


def test_distill_at_to_a_timm_student_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = distill_digits(capsys, tmp_path, "at", "--arch", TIMM_STUDENT)
    assert r.code == 2
    assert one_error(r.err) == (
        "error: at pairs the student's maps with the teacher's one to one, but the student "
        "gives 4 and the teacher 3; name as many layers of each with --feature-layers, or "
        "choose a student of the teacher's family"
    )
    assert not (tmp_path / "run").exists()
