"""methods/reviewkd.py: knowledge review (mdistiller distillers/ReviewKD.py): the HCL loss in
float64 against numpy, and the ABF chain's order and shapes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from icckd_cli.methods.feature_maps import scaled_epochs
from icckd_cli.methods.reviewkd import fusion, hcl_loss, review
from tests.featref import TIMM_STUDENT, distill_digits, last_metrics, maps, pool, rel, t64


def reference(g_s: list[np.ndarray], g_t: list[np.ndarray]) -> float:
    total = 0.0
    for s, t in zip(g_s, g_t, strict=True):
        loss, weight, norm = float(((s - t) ** 2).mean()), 1.0, 1.0
        for side in (4, 2, 1):
            if side >= s.shape[2]:
                continue
            weight /= 2
            loss += float(((pool(s, side) - pool(t, side)) ** 2).mean()) * weight
            norm += weight
        total += loss / norm
    return total


@pytest.mark.parametrize(
    "shapes",
    [[(2, 3, 1, 1)], [(4, 8, 8, 8), (4, 16, 4, 4), (4, 32, 2, 2), (4, 64, 1, 1)], [(3, 5, 16, 16)]],
)
def test_hcl_matches_the_numpy_reference(shapes: list) -> None:
    g_s, g_t = maps(1, *shapes), maps(2, *shapes)
    got = hcl_loss([t64(a) for a in g_s], [t64(a) for a in g_t])
    assert rel(got, reference(g_s, g_t)) <= 1e-6


def test_review_fuses_from_the_deepest_level_and_returns_the_teachers_shapes() -> None:
    # resnet8x4 student levels (64@32, 128@16, 256@8, pooled 256@1) onto resnet32x4's
    modules = fusion([64, 128, 256, 256], [64, 128, 256, 256])
    assert "att" not in modules[0] and all("att" in m for m in modules[1:])  # deepest: no fusion
    assert modules[0]["conv1"][0].out_channels == 256  # min(512, the deepest width)
    levels = [torch.randn(2, c, s, s) for c, s in ((64, 32), (128, 16), (256, 8), (256, 1))]
    out = review(modules, levels, [32, 16, 8, 1], [32, 16, 8, 1])
    assert [tuple(o.shape[1:]) for o in out] == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (256, 1, 1),
    ]


def test_warmup_is_twenty_of_240_epochs_scaled() -> None:
    warmup = [scaled_epochs(None, epochs, 20) for epochs in (240, 120, 12, 1)]
    assert warmup == [20, 10, 1, 1] and scaled_epochs(5, 240, 20) == 5


def test_distill_reviewkd_on_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "reviewkd")
    assert r.code == 0, r.err
    row = last_metrics(tmp_path / "run")
    assert row["epoch"] == 1 and math.isfinite(row["train_reviewkd"]) and row["train_reviewkd"] > 0
    assert row["train_ce"] > 0 and "train_kd" not in row


def test_distill_reviewkd_to_a_timm_student(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = distill_digits(capsys, tmp_path, "reviewkd", "--arch", TIMM_STUDENT)
    assert r.code == 0, r.err
    assert math.isfinite(last_metrics(tmp_path / "run")["train_reviewkd"])
