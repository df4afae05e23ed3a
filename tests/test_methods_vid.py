"""methods/vid.py: variational information distillation (RepDistiller distiller_zoo/VID.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from icckd_cli.methods.vid import vid_nll, vid_regressor, vid_stage_loss
from tests.featref import TIMM_STUDENT, distill_digits, last_metrics, maps, rel, t64
from tests.helpers import one_error


def reference(mu: np.ndarray, log_scale: np.ndarray, t: np.ndarray, eps: float) -> float:
    var = np.log(1 + np.exp(log_scale)) + eps
    nll = 0.5 * ((mu - t) ** 2 / var[None, :, None, None] + np.log(var)[None, :, None, None])
    return float(nll.mean())


@pytest.mark.parametrize("eps", [1e-5, 1e-2])
@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (8, 64, 8, 8), (4, 5, 3, 7)])
def test_vid_nll_matches_the_numpy_reference(eps: float, shape: tuple) -> None:
    mu, t, ls = maps(shape[1], shape, shape, (shape[1],))
    assert rel(vid_nll(t64(mu), t64(ls), t64(t), eps), reference(mu, ls, t, eps)) <= 1e-6


def test_the_regressor_starts_at_the_published_variance_and_pools_the_larger_map() -> None:
    module = vid_regressor(16, 32).double()
    log_scale = module["scale"]["log_scale"]
    assert log_scale.shape == (32,)
    assert math.isclose(
        float(torch.nn.functional.softplus(log_scale[0].detach())) + 1e-5, 5.0, rel_tol=1e-6
    )
    s, t = torch.randn(2, 16, 8, 8, dtype=torch.float64), torch.randn(2, 32, 4, 4).double()
    pooled = torch.nn.functional.avg_pool2d(s, 2)
    expected = vid_nll(module["mean"](pooled), log_scale, t)
    assert torch.allclose(vid_stage_loss(module, s, t), expected)


def test_distill_vid_on_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "vid")
    assert r.code == 0, r.err
    row = last_metrics(tmp_path / "run")
    assert row["epoch"] == 1 and math.isfinite(row["train_vid"]) and row["train_vid"] > 0
    assert row["train_ce"] > 0 and "train_kd" not in row


def test_distill_vid_to_a_timm_student_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = distill_digits(capsys, tmp_path, "vid", "--arch", TIMM_STUDENT)
    assert r.code == 2
    assert one_error(r.err) == (
        "error: vid pairs the student's maps with the teacher's one to one, but the student "
        "gives 4 and the teacher 3; name as many layers of each with --feature-layers, or "
        "choose a student of the teacher's family"
    )
    assert not (tmp_path / "run").exists()
