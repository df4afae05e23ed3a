"""Variational information distillation (Ahn et al., "Variational Information Distillation
for Knowledge Transfer", CVPR 2019): per stage, a regressor (three 1x1 convs with ReLUs,
the teacher's width in the middle) predicts the teacher's map from the student's as the mean
of a Gaussian whose per-channel variance softplus(log_scale) + eps is learnt, initialised
at 5; the loss is the mean negative log-likelihood, summed over the stages (RepDistiller's
distiller_zoo/VID.py on feat[1:-1]). Defaults (RepDistiller's train_student.py, `-b 1`;
mdistiller VID: FEAT_WEIGHT 1, INIT_PRED_VAR 5, EPS 1e-5): CE 1 and VID 1. The regressors
and variances are the method's own and train with the student.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import Field

from icckd_cli.methods.feature_maps import FeatureLayers, match_sizes, same_count, stage_pair
from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:
    from torch import Tensor, nn

INIT_PRED_VAR, EPS = 5.0, 1e-5  # VID.py's defaults


def vid_nll(pred_mean: Tensor, log_scale: Tensor, target: Tensor, eps: float = EPS) -> Tensor:
    """mean of 0.5 ((mu - t)^2 / var + log var), var = softplus(log_scale) + eps per channel:
    (B, C, H, W), (C,), (B, C, H, W) -> ()."""
    import torch.nn.functional as F

    var = (F.softplus(log_scale) + eps).view(1, -1, 1, 1)
    return (0.5 * ((pred_mean - target.detach()).pow(2) / var + var.log())).mean()


def vid_regressor(
    s_c: int, t_c: int, init_var: float = INIT_PRED_VAR, eps: float = EPS
) -> nn.Module:
    """One stage's regressor (`mean`: C_s -> C_t -> C_t -> C_t 1x1 convs) and `log_scale` (C_t,)."""
    import torch
    from torch import nn

    def conv(i: int, o: int) -> nn.Conv2d:
        return nn.Conv2d(i, o, kernel_size=1, bias=False)

    mean = nn.Sequential(conv(s_c, t_c), nn.ReLU(), conv(t_c, t_c), nn.ReLU(), conv(t_c, t_c))
    # softplus(log_scale) + eps = init_var at the start
    start = math.log(math.expm1(init_var - eps))
    scale = nn.ParameterDict({"log_scale": nn.Parameter(torch.full((t_c,), start))})
    return nn.ModuleDict({"mean": mean, "scale": scale})


def vid_stage_loss(module: nn.Module, f_s: Tensor, f_t: Tensor, eps: float = EPS) -> Tensor:
    """One stage's VID loss through its regressor: (B, C_s, H, W), (B, C_t, H', W') -> ()."""
    s, t = match_sizes(f_s, f_t)
    parts: Any = module
    return vid_nll(parts["mean"](s), parts["scale"]["log_scale"], t, eps)


class VIDSettings(FeatureLayers):
    """VID's settings (Ahn et al. 2019, as the CRD benchmark runs it)."""

    vid_weight: float | None = Field(None, ge=0, description="VID weight.")
    vid_init_var: float = Field(INIT_PRED_VAR, gt=0)  # the predicted variance at the start


def _build(settings: VIDSettings, context: Context) -> dict[str, Part]:
    from torch import nn

    student, teacher = stage_pair(context)
    same_count("vid", student.maps[1:], teacher.maps[1:])
    init = settings.vid_init_var
    stages = nn.ModuleList(
        vid_regressor(s[0], t[0], init)
        for s, t in zip(student.maps[1:], teacher.maps[1:], strict=True)
    )

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        pairs = zip(stages, out["stages"].maps[1:], out["t_stages"].maps[1:], strict=True)
        total: Any = sum(vid_stage_loss(m, s, t) for m, s, t in pairs)
        return total

    return {"vid": Part(term, module=stages)}


VID = register(
    Method(
        name="vid",
        order=68,
        parts=("vid",),
        settings=VIDSettings,
        preset={"ce_weight": 1.0, "vid_weight": 1},
        build=_build,
        recorded=("vid_init_var",),
        stages=True,
    )
)


# KD added as the CRD benchmark combines it (RepDistiller's README: `-a 1` beside the method's
# `-b`, CE 1): CE 1, KD 1
KD_VID = register(
    Preset("kd+vid", order=69, preset={"ce_weight": 1.0, "kd_weight": 1.0, "vid_weight": 1})
)
