"""Probabilistic knowledge transfer (Passalis and Tefas, "Learning Deep Representations with
Probabilistic Knowledge Transfer", ECCV 2018): the cosine similarities of the batch's
pooled features, shifted to [0, 1] and normalised per row into conditional probabilities,
matched by KL divergence (averaged over all B^2 entries), eps 1e-7 (RepDistiller's
distiller_zoo/PKT.py on feat[-1]). CRD benchmark defaults (RepDistiller's train_student.py,
`-b 30000`; mdistiller PKT.LOSS.FEAT_WEIGHT 30000): CE 1 and PKT 30000.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:
    from torch import Tensor

EPS = 1e-7  # PKT.py's eps, in the norms and the logarithm


def conditional_probabilities(f: Tensor, eps: float = EPS) -> Tensor:
    """(B, D) -> (B, B): (cos + 1) / 2 of each pair, each row normalised to sum to 1."""
    import torch

    x = f.flatten(1)
    x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + eps)
    x = torch.nan_to_num(x, nan=0.0)  # a row of zeros stays zero
    sim = (x @ x.T + 1.0) / 2.0
    return sim / sim.sum(1, keepdim=True)


def pkt_loss(f_s: Tensor, f_t: Tensor, eps: float = EPS) -> Tensor:
    """mean over (i, j) of P_t log((P_t + eps) / (P_s + eps)): (B, D) x2 -> ()."""
    p_s = conditional_probabilities(f_s, eps)
    p_t = conditional_probabilities(f_t.detach(), eps)
    return (p_t * ((p_t + eps) / (p_s + eps)).log()).mean()


class PKTSettings(BaseModel):
    """PKT's settings (Passalis and Tefas 2018, as the CRD benchmark runs it)."""

    pkt_weight: float | None = Field(None, ge=0, description="PKT weight.")


def _build(settings: PKTSettings, context: Context) -> dict[str, Part]:
    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        return pkt_loss(out["features"], out["t_features"])

    return {"pkt": Part(term)}


PKT = register(
    Method(
        name="pkt",
        order=70,
        parts=("pkt",),
        settings=PKTSettings,
        preset={"ce_weight": 1.0, "pkt_weight": 30000},
        build=_build,
        teacher_features=True,
    )
)


# KD added as the CRD benchmark combines it (RepDistiller's README: `-a 1` beside the method's
# `-b`, CE 1): CE 1, KD 1
KD_PKT = register(
    Preset("kd+pkt", order=71, preset={"ce_weight": 1.0, "kd_weight": 1.0, "pkt_weight": 30000})
)
