"""methods/fsp.py: flow of solution procedure (RepDistiller distiller_zoo/FSP.py) in float64."""

from __future__ import annotations

import numpy as np
import pytest

from icckd_cli.base.errors import UsageError
from icckd_cli.methods.fsp import check_channels, fsp_loss
from tests.featref import maps, match, rel, t64


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
