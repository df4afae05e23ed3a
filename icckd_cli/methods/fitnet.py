"""FitNets (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015).

The hint: mean squared error between a regressed student map and the teacher's map at the
same point, the "hint layer" 2 of RepDistiller's feature list (the second stage's output).
Defaults of the CRD benchmark (RepDistiller's train_student.py and helper/loops.py, `-r 1
-a 0 -b 100`; mdistiller configs FITNET.LOSS.FEAT_WEIGHT 100): CE 1 and the hint at 100,
throughout training: the benchmark trains FitNet students in one stage (its helper/
pretrain.py serves AB, FT and FSP only), not the paper's two-stage hint training. The
regressor (a conv, BN and ReLU) is the method's own and trains with the student.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from icckd_cli.base.errors import UsageError
from icckd_cli.methods.feature_maps import FeatureLayers, Shape, conv_regressor, stage_pair
from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:
    from torch import Tensor, nn


def hint_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Mean squared error of the regressed student map and the teacher's: (B, C, H, W) x2 -> ()."""
    import torch.nn.functional as F

    return F.mse_loss(f_s, f_t.detach())


def regressor(s: Shape, t: Shape) -> nn.Module:
    """The student's map (C_s, H_s, W_s) onto the teacher's (C_t, H_t, W_t)."""
    return conv_regressor("fitnet", s, t)


class FitNetSettings(FeatureLayers):
    """FitNet's settings (Romero et al. 2015, as the CRD benchmark runs it)."""

    fitnet_weight: float | None = Field(None, ge=0, description="FitNet hint weight.")
    fitnet_hint_layer: int = Field(2, ge=0, description="FitNet hint layer (0: the stem).")


def _build(settings: FitNetSettings, context: Context) -> dict[str, Part]:
    student, teacher = stage_pair(context)
    k = settings.fitnet_hint_layer
    count = min(len(student.maps), len(teacher.maps))
    if k >= count:
        raise UsageError(
            f"--fitnet-hint-layer {k} is past the maps the student ({len(student.maps)}) and the "
            f"teacher ({len(teacher.maps)}) give; choose 0 to {count - 1}"
        )
    reg = regressor(student.maps[k], teacher.maps[k])

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        return hint_loss(reg(out["stages"].maps[k]), out["t_stages"].maps[k])

    return {"fitnet": Part(term, module=reg)}


FITNET = register(
    Method(
        name="fitnet",
        order=60,
        parts=("fitnet",),
        settings=FitNetSettings,
        preset={"ce_weight": 1.0, "fitnet_weight": 100},
        build=_build,
        recorded=("fitnet_hint_layer",),
        stages=True,
    )
)


# KD added as the CRD benchmark combines it (RepDistiller's README: `-a 1` beside the method's
# `-b`, CE 1): CE 1, KD 1
KD_FITNET = register(
    Preset("kd+fitnet", order=61, preset={"ce_weight": 1.0, "kd_weight": 1.0, "fitnet_weight": 100})
)
