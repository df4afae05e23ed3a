"""What the feature-method tests share: float64 numpy helpers (random maps, block average
pools) and a tiny distillation on digits through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.helpers import Result, digits_teacher, icckd


def maps(seed: int, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Random float64 arrays of the given shapes, some entries negative."""
    rng = np.random.default_rng(seed)
    return [rng.normal(0.2, 1.0, size=s) for s in shapes]


def t64(a: np.ndarray) -> torch.Tensor:
    """A float64 tensor of a numpy array."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.float64)


def pool(a: np.ndarray, side: int) -> np.ndarray:
    """Average pool of (B, C, H, W) to side x side where side divides H and W."""
    b, c, h, w = a.shape
    return a.reshape(b, c, side, h // side, side, w // side).mean(axis=(3, 5))


def match(s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The larger of two maps pooled to the smaller's side (RepDistiller's size matching)."""
    if s.shape[2] > t.shape[2]:
        return pool(s, t.shape[2]), t
    if s.shape[2] < t.shape[2]:
        return s, pool(t, s.shape[2])
    return s, t


def rel(actual: torch.Tensor, expected: float) -> float:
    """Relative error of a scalar tensor against a float."""
    return abs(float(actual) - expected) / max(abs(expected), 1e-300)


# ----------------------------------------------------------------------------- CLI runs

# the smallest distillation that runs every step of a method: 30 images, one epoch
FEW = ["--dataset", "digits", "--train-per-class", "3", "--test-per-class", "2",
       "--batch-size", "16", "--device", "cpu", "--epochs", "1"]  # fmt: skip
# a timm student: five maps (the stem at 16 px, then 8, 4, 2 and 1 px at 32 px), not resnet8's
TIMM_STUDENT = "timm:mobilenetv3_small_050"


def distill_digits(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, method: str, *more: str
) -> Result:
    """`icckd distill --method METHOD` from an untrained resnet8 teacher to a resnet8 student
    (or the --arch in `more`) on 30 digits; the run goes to tmp_path/run."""
    teacher = tmp_path / "teacher.safetensors"
    if not teacher.exists():
        digits_teacher(teacher)
    return icckd(capsys, "distill", "--teacher", str(teacher), "--arch", "resnet8",
                 "--method", method, *FEW, "--out", str(tmp_path / "run"), *more)  # fmt: skip


def last_metrics(run: Path) -> dict[str, Any]:
    """The last row of a finished run's metrics.jsonl."""
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
