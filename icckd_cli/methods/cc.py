"""Correlation congruence (Peng et al., "Correlation Congruence for Knowledge Distillation",
ICCV 2019), in the CRD benchmark's form: both pooled features go through a linear embedding
of 128 dimensions (the method's own, trained with the student), and the loss is the mean
over consecutive samples of sum_d |e_s - e_t|_i,d * |e_s - e_t|_{i+1},d (RepDistiller's
distiller_zoo/CC.py, models/util.py LinearEmbed, `--feat_dim 128`). Defaults (RepDistiller's
train_student.py, `-b 0.02`): CE 1 and CC 0.02.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

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
