"""Similarity-preserving KD (Tung and Mori, "Similarity-Preserving Knowledge Distillation",
ICCV 2019): the batch's (B, B) Gram matrix of the last stage's flattened map, each row
L2-normalised, matched by the squared Frobenius norm over B^2 (RepDistiller's
distiller_zoo/SP.py on feat[-2]). CRD benchmark defaults (RepDistiller's train_student.py,
`-b 3000`; mdistiller SP.LOSS.FEAT_WEIGHT 3000): CE 1 and SP 3000.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from icckd_cli.methods.feature_maps import FeatureLayers
from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:
    from torch import Tensor


def similarity(f: Tensor) -> Tensor:
    """(B, ...) -> (B, B): the Gram matrix of the flattened rows, each row of unit L2 norm."""
    import torch.nn.functional as F

    x = f.flatten(1)
    return F.normalize(x @ x.T)


def sp_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """||G_t - G_s||_F^2 / B^2: (B, ...) x2 -> ()."""
    b = f_s.shape[0]
    return (similarity(f_t.detach()) - similarity(f_s)).pow(2).sum() / (b * b)


class SPSettings(FeatureLayers):
    """SP's settings (Tung and Mori 2019, as the CRD benchmark runs it)."""

    sp_weight: float | None = Field(None, ge=0, description="SP weight.")


def _build(settings: SPSettings, context: Context) -> dict[str, Part]:
    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        return sp_loss(out["stages"].maps[-1], out["t_stages"].maps[-1])

    return {"sp": Part(term)}


SP = register(
    Method(
        name="sp",
        order=64,
        parts=("sp",),
        settings=SPSettings,
        preset={"ce_weight": 1.0, "sp_weight": 3000},
        build=_build,
        stages=True,
    )
)


# KD added as the CRD benchmark combines it (RepDistiller's README: `-a 1` beside the method's
# `-b`, CE 1): CE 1, KD 1
KD_SP = register(
    Preset("kd+sp", order=65, preset={"ce_weight": 1.0, "kd_weight": 1.0, "sp_weight": 3000})
)
