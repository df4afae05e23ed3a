"""methods/nst.py: neuron selectivity transfer (RepDistiller distiller_zoo/NST.py) in float64."""

from __future__ import annotations

import numpy as np
import pytest

from icckd_cli.methods.nst import nst_loss
from tests.featref import maps, match, rel, t64


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
