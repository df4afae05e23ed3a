"""Float64 numpy helpers the feature-method tests share: random maps and block average pools."""

from __future__ import annotations

import numpy as np
import torch


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
