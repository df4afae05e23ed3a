"""methods/pkt.py: probabilistic knowledge transfer (RepDistiller distiller_zoo/PKT.py)."""

from __future__ import annotations

import numpy as np
import pytest

from icckd_cli.methods.pkt import pkt_loss
from tests.featref import maps, rel, t64

EPS = 1e-7


def reference(s: np.ndarray, t: np.ndarray) -> float:
    def probs(f: np.ndarray) -> np.ndarray:
        x = f / (np.sqrt((f**2).sum(axis=1, keepdims=True)) + EPS)
        sim = (x @ x.T + 1) / 2
        return sim / sim.sum(axis=1, keepdims=True)

    ps, pt = probs(s), probs(t)
    return float(np.mean(pt * np.log((pt + EPS) / (ps + EPS))))


@pytest.mark.parametrize(("batch", "ds", "dt"), [(2, 3, 5), (16, 64, 256), (40, 8, 8)])
def test_pkt_matches_the_numpy_reference(batch: int, ds: int, dt: int) -> None:
    s, t = maps(batch + ds, (batch, ds), (batch, dt))
    assert rel(pkt_loss(t64(s), t64(t)), reference(s, t)) <= 1e-6


def test_identical_features_give_zero() -> None:
    (s,) = maps(0, (8, 16))
    assert abs(float(pkt_loss(t64(s), t64(s)))) < 1e-12
