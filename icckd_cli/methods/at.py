"""Attention transfer (Zagoruyko and Komodakis, "Paying More Attention to Attention", ICLR
2017): each stage's spatial attention map, the channel mean of |f|^p (p = 2) flattened and
L2-normalised, matched by squared error, summed over the stages (RepDistiller's
distiller_zoo/AT.py on feat[1:-1]). CRD benchmark defaults (RepDistiller's train_student.py,
`-b 1000`; mdistiller AT.LOSS.FEAT_WEIGHT 1000): CE 1 and AT 1000.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from icckd_cli.methods.feature_maps import FeatureLayers, match_sizes, same_count, stage_pair
from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:
    from torch import Tensor


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """(B, C, H, W) -> (B, H * W): mean over channels of f^p, each row of unit L2 norm."""
    import torch.nn.functional as F

    return F.normalize(f.pow(p).mean(1).flatten(1))


def at_loss(g_s: Sequence[Tensor], g_t: Sequence[Tensor], p: float = 2.0) -> Tensor:
    """Sum over paired maps of the mean squared difference of their attention maps: -> ()."""
    total: Tensor | float = 0.0
    for f_s, f_t in zip(g_s, g_t, strict=True):
        s, t = match_sizes(f_s, f_t.detach())
        total = total + (attention_map(s, p) - attention_map(t, p)).pow(2).mean()
    assert not isinstance(total, float)
    return total


class ATSettings(FeatureLayers):
    """AT's settings (Zagoruyko and Komodakis 2017, as the CRD benchmark runs it)."""

    at_weight: float | None = Field(None, ge=0, description="AT weight.")
    at_p: float = Field(2.0, gt=0)  # the power of the attention map, AT.py's p


def _build(settings: ATSettings, context: Context) -> dict[str, Part]:
    student, teacher = stage_pair(context)
    same_count("at", student.maps[1:], teacher.maps[1:])
    p = settings.at_p

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        return at_loss(out["stages"].maps[1:], out["t_stages"].maps[1:], p)

    return {"at": Part(term)}


AT = register(
    Method(
        name="at",
        order=62,
        parts=("at",),
        settings=ATSettings,
        preset={"ce_weight": 1.0, "at_weight": 1000},
        build=_build,
        recorded=("at_p",),
        stages=True,
    )
)


# KD added as the CRD benchmark combines it (RepDistiller's README: `-a 1` beside the method's
# `-b`, CE 1): CE 1, KD 1
KD_AT = register(
    Preset("kd+at", order=63, preset={"ce_weight": 1.0, "kd_weight": 1.0, "at_weight": 1000})
)
