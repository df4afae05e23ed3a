"""Correlation congruence (Peng et al., "Correlation Congruence for Knowledge Distillation",
ICCV 2019), in the CRD benchmark's form: both pooled features go through a linear embedding
of 128 dimensions (the method's own, trained with the student), and the loss is the mean
over consecutive samples of sum_d |e_s - e_t|_i,d * |e_s - e_t|_{i+1},d (RepDistiller's
distiller_zoo/CC.py, models/util.py LinearEmbed, `--feat_dim 128`). Defaults (RepDistiller's
train_student.py, `-b 0.02`): CE 1 and CC 0.02.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:
    from torch import Tensor, nn


def cc_loss(e_s: Tensor, e_t: Tensor) -> Tensor:
    """mean_i sum_d delta_i,d * delta_{i+1},d with delta = |e_s - e_t|: (B, D) x2 -> ()."""
    delta = (e_s - e_t).abs()
    return (delta[:-1] * delta[1:]).sum(1).mean()


def embedding(dim_in: int, dim_out: int) -> nn.Module:
    """A linear map of the flattened features: (B, dim_in) -> (B, dim_out)."""
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(dim_in, dim_out))


class CCSettings(BaseModel):
    """CC's settings (Peng et al. 2019, as the CRD benchmark runs it)."""

    cc_weight: float | None = Field(None, ge=0, description="CC weight.")
    cc_embed_dim: int = Field(128, ge=1)  # RepDistiller's --feat_dim


def _build(settings: CCSettings, context: Context) -> dict[str, Part]:
    from torch import nn

    dim = settings.cc_embed_dim
    embed = nn.ModuleDict(
        {
            "student": embedding(context.feature_dim, dim),
            "teacher": embedding(context.teacher_feature_dim, dim),
        }
    )

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        e_t = embed["teacher"](out["t_features"].detach())  # trained, as RepDistiller's embed_t
        return cc_loss(embed["student"](out["features"]), e_t)

    return {"cc": Part(term, module=embed)}


CC = register(
    Method(
        name="cc",
        order=66,
        parts=("cc",),
        settings=CCSettings,
        preset={"ce_weight": 1.0, "cc_weight": 0.02},
        build=_build,
        recorded=("cc_embed_dim",),
        teacher_features=True,
    )
)


# KD added as the CRD benchmark combines it (RepDistiller's README: `-a 1` beside the method's
# `-b`, CE 1): CE 1, KD 1
KD_CC = register(
    Preset("kd+cc", order=67, preset={"ce_weight": 1.0, "kd_weight": 1.0, "cc_weight": 0.02})
)
