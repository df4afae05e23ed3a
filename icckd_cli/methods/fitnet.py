"""FitNets (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015).

The hint: mean squared error between a regressed student map and the teacher's map at the
same point, the "hint layer" 2 of RepDistiller's feature list (the second stage's output).
Defaults of the CRD benchmark (RepDistiller's train_student.py and helper/loops.py, `-r 1
-a 0 -b 100`; mdistiller configs FITNET.LOSS.FEAT_WEIGHT 100): CE 1 and the hint at 100,
throughout training. The regressor (a conv, BN and ReLU) is the method's own and trains
with the student.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from icckd_cli.methods.feature_maps import Shape, conv_regressor

if TYPE_CHECKING:
    from torch import Tensor, nn


def hint_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Mean squared error of the regressed student map and the teacher's: (B, C, H, W) x2 -> ()."""
    import torch.nn.functional as F

    return F.mse_loss(f_s, f_t.detach())


def regressor(s: Shape, t: Shape) -> nn.Module:
    """The student's map (C_s, H_s, W_s) onto the teacher's (C_t, H_t, W_t)."""
    return conv_regressor("fitnet", s, t)


class FitNetSettings(BaseModel):
    """FitNet's settings (Romero et al. 2015, as the CRD benchmark runs it)."""

    fitnet_weight: float | None = Field(None, ge=0, description="FitNet hint weight.")
    fitnet_hint_layer: int = Field(2, ge=0, description="FitNet hint layer (0: the stem).")
