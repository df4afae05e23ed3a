"""Activation boundaries (Heo et al., "Knowledge Transfer via Distillation of Activation
Boundaries Formed by Hidden Neurons", AAAI 2019): a hinge-like squared loss, with margin 1,
that pushes each connected student pre-activation to the teacher's side of zero; stage i of
n weighted 2^(i - n + 1), summed over the elements and scaled by 3 / (1000 B)
(RepDistiller's distiller_zoo/AB.py on the pre-activations feat[1:-1], connectors of
models/util.py: a conv and BN where the shapes differ). As in the CRD benchmark
(RepDistiller's train_student.py and helper/pretrain.py) AB trains only in a preliminary
stage of 30 epochs (the student's feature layers, in training mode as pretrain.py's
init_modules.train() leaves them, and the connectors), after which the student trains with
CE 1 alone (`-b 1` weighs a term that is 0 there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from icckd_cli.methods.feature_maps import (
    FeatureLayers,
    Shape,
    conv_regressor,
    same_count,
    scaled_setting,
    stage_pair,
)
from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:
    from torch import Tensor, nn

INIT_EPOCHS = 30  # RepDistiller's --init_epochs


def boundary_loss(source: Tensor, target: Tensor, margin: float = 1.0) -> Tensor:
    """sum of (s + m)^2 where s > -m and t <= 0, and (s - m)^2 where s <= m and t > 0:
    (B, C, H, W) x2 -> ()."""
    t = target.detach()
    below = ((source > -margin) & (t <= 0)).to(source.dtype)
    above = ((source <= margin) & (t > 0)).to(source.dtype)
    return ((source + margin).pow(2) * below + (source - margin).pow(2) * above).sum()


def ab_loss(g_s: Sequence[Tensor], g_t: Sequence[Tensor], margin: float = 1.0) -> Tensor:
    """sum_i 2^(i - n + 1) boundary_loss_i * 3 / (1000 B) over n connected stages: -> ()."""
    n, b = len(g_s), g_s[0].shape[0]
    total: Tensor | float = 0.0
    for i, (s, t) in enumerate(zip(g_s, g_t, strict=True)):
        total = total + 2.0 ** (i - n + 1) * boundary_loss(s, t, margin) / b / 1000 * 3
    assert not isinstance(total, float)
    return total


def connectors(student: Sequence[Shape], teacher: Sequence[Shape]) -> nn.Module:
    """Per stage: identity where the shapes agree, else a conv (as FitNet's) and BN."""
    from torch import nn

    return nn.ModuleList(
        nn.Sequential() if s[:2] == t[:2] else conv_regressor("ab", s, t, relu=False)
        for s, t in zip(student, teacher, strict=True)
    )


class ABSettings(FeatureLayers):
    """AB's settings (Heo et al. 2019, as the CRD benchmark runs it)."""

    ab_weight: float | None = Field(None, ge=0, description="AB weight (preliminary stage).")
    ab_margin: float = Field(1.0, ge=0)  # AB.py's margin
    ab_init_epochs: int | None = Field(
        None, ge=0, description="AB preliminary epochs (30 of 240, scaled)."
    )


def _build(settings: ABSettings, context: Context) -> dict[str, Part]:
    student, teacher = stage_pair(context)
    same_count("ab", student.preact[1:], teacher.preact[1:])
    conn: Any = connectors(student.preact[1:], teacher.preact[1:])
    margin = settings.ab_margin

    def preliminary(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        g_s = [c(f) for c, f in zip(conn, out["stages"].preact[1:], strict=True)]
        return ab_loss(g_s, out["t_stages"].preact[1:], margin)

    # no term after the preliminary stage (RepDistiller's loops.py: loss_kd = 0)
    return {"ab": Part(None, module=conn, preliminary=preliminary)}


AB = register(
    Method(
        name="ab",
        order=72,
        parts=("ab",),
        settings=ABSettings,
        preset={"ce_weight": 1.0, "ab_weight": 1},
        build=_build,
        recorded=("ab_margin", "ab_init_epochs"),
        stages=True,
        resolve=scaled_setting("ab_init_epochs", INIT_EPOCHS),
        preliminary=lambda settings: settings.ab_init_epochs,
    )
)


# KD added as the CRD benchmark combines it (RepDistiller's README: `-a 1` beside the method's
# `-b`, CE 1): CE 1, KD 1
KD_AB = register(
    Preset("kd+ab", order=73, preset={"ce_weight": 1.0, "kd_weight": 1.0, "ab_weight": 1})
)
