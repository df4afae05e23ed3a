"""methods/ab.py: activation boundaries (RepDistiller distiller_zoo/AB.py) in float64."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from icckd_cli.methods.ab import ab_loss, connectors
from tests.featref import TIMM_STUDENT, distill_digits, maps, rel, t64
from tests.helpers import one_error


def reference(g_s: list[np.ndarray], g_t: list[np.ndarray], margin: float) -> float:
    n, b = len(g_s), g_s[0].shape[0]
    total = 0.0
    for i, (s, t) in enumerate(zip(g_s, g_t, strict=True)):
        low = np.where((s > -margin) & (t <= 0), (s + margin) ** 2, 0.0)
        high = np.where((s <= margin) & (t > 0), (s - margin) ** 2, 0.0)
        total += 2.0 ** (i - n + 1) * (low + high).sum() / b / 1000 * 3
    return total


@pytest.mark.parametrize("margin", [1.0, 0.5])
@pytest.mark.parametrize(
    "shapes", [[(2, 4, 4, 4)], [(8, 16, 8, 8), (8, 32, 4, 4), (8, 64, 2, 2)], [(3, 5, 6, 6)] * 2]
)
def test_ab_matches_the_numpy_reference(margin: float, shapes: list) -> None:
    g_s, g_t = maps(1, *shapes), maps(2, *shapes)
    got = ab_loss([t64(a) for a in g_s], [t64(a) for a in g_t], margin)
    assert rel(got, reference(g_s, g_t, margin)) <= 1e-6


def test_connectors_are_identities_where_shapes_agree() -> None:
    conn = connectors([(16, 8, 8), (32, 4, 4)], [(16, 8, 8), (64, 4, 4)])
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(conn[0](x), x) and len(list(conn[0].parameters())) == 0
    assert tuple(conn[1](torch.randn(2, 32, 4, 4)).shape) == (2, 64, 4, 4)


def test_distill_ab_on_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # one epoch asked: the preliminary stage (30 of 240 scaled, at least 1) runs first
    r = distill_digits(capsys, tmp_path, "kd+ab")
    assert r.code == 0, r.err
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert math.isfinite(rows[0]["train_ab"]) and rows[0]["train_ab"] > 0
    assert "train_ce" not in rows[0] and "train_kd" not in rows[0]  # the method's loss alone
    assert rows[1]["train_ce"] > 0 and rows[1]["train_kd"] >= 0
    assert "train_ab" not in rows[1]  # nothing follows, as RepDistiller's loss_kd = 0


def test_distill_ab_to_a_timm_student_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = distill_digits(capsys, tmp_path, "ab", "--arch", TIMM_STUDENT)
    assert r.code == 2
    assert one_error(r.err) == (
        "error: ab pairs the student's maps with the teacher's one to one, but the student "
        "gives 4 and the teacher 3; name as many layers of each with --feature-layers, or "
        "choose a student of the teacher's family"
    )
    assert not (tmp_path / "run").exists()
