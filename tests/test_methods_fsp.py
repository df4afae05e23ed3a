"""methods/fsp.py: flow of solution procedure (RepDistiller distiller_zoo/FSP.py) in float64."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from icckd_cli.base.errors import UsageError
from icckd_cli.methods.fsp import check_channels, fsp_loss
from tests.featref import TIMM_STUDENT, distill_digits, maps, match, rel, t64
from tests.helpers import one_error


def reference(g_s: list[np.ndarray], g_t: list[np.ndarray]) -> float:
    def grams(g: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for bottom, top in zip(g[:-1], g[1:], strict=True):
            bottom, top = match(bottom, top)
            b, cb = bottom.shape[:2]
            ct = top.shape[1]
            x, y = bottom.reshape(b, cb, -1), top.reshape(b, ct, -1)
            out.append(np.einsum("bin,bjn->bji", x, y) / x.shape[2])  # (B, C_top, C_bottom)
        return out

    return sum(float(((s - t) ** 2).mean()) for s, t in zip(grams(g_s), grams(g_t), strict=True))


@pytest.mark.parametrize(
    "shapes",
    [
        [(2, 4, 4, 4), (2, 8, 4, 4)],
        [(4, 16, 32, 32), (4, 16, 32, 32), (4, 32, 16, 16), (4, 64, 8, 8)],
        [(3, 6, 4, 4), (3, 5, 8, 8)],
    ],
)
def test_fsp_matches_the_numpy_reference(shapes: list) -> None:
    g_s, g_t = maps(1, *shapes), maps(2, *shapes)
    got = fsp_loss([t64(a) for a in g_s], [t64(a) for a in g_t])
    assert rel(got, reference(g_s, g_t)) <= 1e-6


def test_fsp_refuses_different_widths() -> None:
    with pytest.raises(UsageError, match=r"have \[16, 32\] and \[32, 64\]; choose a student"):
        check_channels([(16, 8, 8), (32, 4, 4)], [(32, 8, 8), (64, 4, 4)])


def test_distill_fsp_on_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # one epoch asked: the preliminary stage (30 of 240 scaled, at least 1) runs first
    r = distill_digits(capsys, tmp_path, "kd+fsp")
    assert r.code == 0, r.err
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert math.isfinite(rows[0]["train_fsp"]) and rows[0]["train_fsp"] > 0
    assert "train_ce" not in rows[0] and "train_kd" not in rows[0]  # the method's loss alone
    assert rows[1]["train_ce"] > 0 and rows[1]["train_kd"] >= 0
    assert "train_fsp" not in rows[1]  # nothing follows, as RepDistiller's loss_kd = 0


def test_distill_fsp_to_a_timm_student_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = distill_digits(capsys, tmp_path, "fsp", "--arch", TIMM_STUDENT)
    assert r.code == 2
    assert one_error(r.err) == (
        "error: fsp pairs the student's maps with the teacher's one to one, but the student "
        "gives 5 and the teacher 4; name as many layers of each with --feature-layers, or "
        "choose a student of the teacher's family"
    )
    assert not (tmp_path / "run").exists()
