"""methods/ft.py: factor transfer (RepDistiller distiller_zoo/FT.py, models/util.py
Paraphraser and Translator) in float64."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from icckd_cli.methods.ft import ft_loss, paraphraser, reconstruction_loss, translator
from tests.featref import TIMM_STUDENT, distill_digits, last_metrics, maps, match, rel, t64


def reference(s: np.ndarray, t: np.ndarray) -> float:
    s, t = match(s, t)

    def factor(f: np.ndarray) -> np.ndarray:
        a = (f**2).mean(axis=1).reshape(f.shape[0], -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return float(np.abs(factor(s) - factor(t)).mean())


@pytest.mark.parametrize(
    ("s", "t"),
    [((2, 4, 4, 4), (2, 4, 4, 4)), ((6, 32, 8, 8), (6, 64, 4, 4)), ((3, 8, 2, 2), (3, 8, 8, 8))],
)
def test_ft_matches_the_numpy_reference(s: tuple, t: tuple) -> None:
    fs, ft = maps(s[1], s, t)
    assert rel(ft_loss(t64(fs), t64(ft)), reference(fs, ft)) <= 1e-6


def test_paraphraser_and_translator_shapes() -> None:
    para, trans = paraphraser(64), translator(32, 64)
    f_t = torch.randn(2, 64, 8, 8)
    assert tuple(para["encoder"](f_t).shape) == (2, 32, 8, 8)  # k = 0.5 of the teacher's
    assert tuple(trans(torch.randn(2, 32, 8, 8)).shape) == (2, 32, 8, 8)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in para.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in trans.modules()) == 3
    rec = para["decoder"](para["encoder"](f_t))
    assert torch.allclose(reconstruction_loss(para, f_t), ((rec - f_t) ** 2).mean())


def test_distill_ft_on_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # one epoch asked: the preliminary stage (30 of 240 scaled, at least 1) runs first
    r = distill_digits(capsys, tmp_path, "kd+ft")
    assert r.code == 0, r.err
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert math.isfinite(rows[0]["train_ft"]) and rows[0]["train_ft"] > 0
    assert "train_ce" not in rows[0] and "train_kd" not in rows[0]  # the method's loss alone
    assert rows[1]["train_ce"] > 0 and rows[1]["train_kd"] >= 0
    assert "train_ft" in rows[1]  # FT's translator term follows


def test_distill_ft_to_a_timm_student(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    r = distill_digits(capsys, tmp_path, "ft", "--arch", TIMM_STUDENT)
    assert r.code == 0, r.err
    assert math.isfinite(last_metrics(tmp_path / "run")["train_ft"])
