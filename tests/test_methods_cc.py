"""methods/cc.py: correlation congruence as RepDistiller's distiller_zoo/CC.py, in float64."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from icckd_cli.methods.cc import cc_loss, embedding
from tests.featref import TIMM_STUDENT, distill_digits, last_metrics, maps, rel, t64


@pytest.mark.parametrize(("batch", "dim"), [(2, 3), (9, 128), (64, 16)])
def test_cc_matches_the_loop_reference(batch: int, dim: int) -> None:
    s, t = maps(batch, (batch, dim), (batch, dim))
    pairs = [
        sum(abs(s[i, d] - t[i, d]) * abs(s[i + 1, d] - t[i + 1, d]) for d in range(dim))
        for i in range(batch - 1)
    ]
    assert rel(cc_loss(t64(s), t64(t)), sum(pairs) / len(pairs)) <= 1e-6


def test_embedding_is_linear_on_the_flattened_features() -> None:
    embed = embedding(64, 128).double()
    x = torch.randn(3, 64, 1, 1, dtype=torch.float64)
    linear = embed[1]
    assert torch.allclose(embed(x), x.flatten(1) @ linear.weight.T + linear.bias)


def test_distill_cc_on_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "cc")
    assert r.code == 0, r.err
    row = last_metrics(tmp_path / "run")
    assert row["epoch"] == 1 and math.isfinite(row["train_cc"]) and row["train_cc"] > 0
    assert row["train_ce"] > 0 and "train_kd" not in row


def test_distill_cc_to_a_timm_student(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "cc", "--arch", TIMM_STUDENT)
    assert r.code == 0, r.err
    assert math.isfinite(last_metrics(tmp_path / "run")["train_cc"])
