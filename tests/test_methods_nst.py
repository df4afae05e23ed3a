"""methods/nst.py: neuron selectivity transfer (RepDistiller distiller_zoo/NST.py) in float64."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from icckd_cli.methods.nst import nst_loss
from tests.featref import TIMM_STUDENT, distill_digits, last_metrics, maps, match, rel, t64
from tests.helpers import one_error


def reference(g_s: list[np.ndarray], g_t: list[np.ndarray]) -> float:
    total = 0.0
    for s, t in zip(g_s, g_t, strict=True):
        s, t = match(s, t)
        b = s.shape[0]
        s = s.reshape(b, s.shape[1], -1)
        t = t.reshape(b, t.shape[1], -1)
        s = s / np.linalg.norm(s, axis=2, keepdims=True)
        t = t / np.linalg.norm(t, axis=2, keepdims=True)

        def kernel(a: np.ndarray, c: np.ndarray) -> float:
            vals = [
                (a[n, i] @ c[n, j]) ** 2
                for n in range(a.shape[0])
                for i in range(a.shape[1])
                for j in range(c.shape[1])
            ]
            return float(np.mean(vals))

        total += kernel(t, t) + kernel(s, s) - 2 * kernel(s, t)
    return total


@pytest.mark.parametrize(
    "pairs",
    [
        [((2, 3, 4, 4), (2, 5, 4, 4))],
        [((3, 8, 8, 8), (3, 16, 4, 4)), ((3, 16, 2, 2), (3, 4, 4, 4))],
    ],
)
def test_nst_matches_the_loop_reference(pairs: list) -> None:
    g_s = maps(1, *[s for s, _ in pairs])
    g_t = maps(2, *[t for _, t in pairs])
    got = nst_loss([t64(a) for a in g_s], [t64(a) for a in g_t])
    assert rel(got, reference(g_s, g_t)) <= 1e-6


def test_distill_nst_on_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "nst")
    assert r.code == 0, r.err
    row = last_metrics(tmp_path / "run")
    assert row["epoch"] == 1 and math.isfinite(row["train_nst"]) and row["train_nst"] > 0
    assert row["train_ce"] > 0 and "train_kd" not in row


def test_distill_nst_to_a_timm_student_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = distill_digits(capsys, tmp_path, "nst", "--arch", TIMM_STUDENT)
    assert r.code == 2
    assert one_error(r.err) == (
        "error: nst pairs the student's maps with the teacher's one to one, but the student "
        "gives 4 and the teacher 3; name as many layers of each with --feature-layers, or "
        "choose a student of the teacher's family"
    )
    assert not (tmp_path / "run").exists()
