"""Flow of solution procedure (Yim et al., "A Gift from Knowledge Distillation: Fast
Optimization, Network Minimization and Transfer Learning", CVPR 2017): the (C_i, C_i+1)
Gram matrix between consecutive maps (the larger pooled to the smaller's side, averaged over
positions), matched by mean squared error, summed over the pairs (RepDistiller's
distiller_zoo/FSP.py on feat[:-1]; the student's and teacher's channel counts must agree).
As in the CRD benchmark (RepDistiller's train_student.py and helper/pretrain.py) FSP trains
only in a preliminary stage of 30 epochs (the student's feature layers, in training mode as
pretrain.py's init_modules.train() leaves them), after which the student trains with CE 1
alone (`-b 50` weighs a term that is 0 there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from icckd_cli.base.errors import UsageError
from icckd_cli.methods.feature_maps import (
    FeatureLayers,
    Shape,
    match_sizes,
    same_count,
    scaled_setting,
    stage_pair,
)
from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:
    from torch import Tensor

INIT_EPOCHS = 30  # RepDistiller's --init_epochs


def fsp_matrices(maps: Sequence[Tensor]) -> list[Tensor]:
    """[(B, C_i, C_i+1)]: mean over positions of bottom_c * top_c' for consecutive maps."""
    out = []
    for bottom, top in zip(maps[:-1], maps[1:], strict=True):
        bottom, top = match_sizes(bottom, top)
        out.append(bottom.flatten(2) @ top.flatten(2).transpose(1, 2) / bottom[0, 0].numel())
    return out


def fsp_loss(g_s: Sequence[Tensor], g_t: Sequence[Tensor]) -> Tensor:
    """sum over consecutive pairs of mean (G_s - G_t)^2: -> ()."""
    total: Tensor | float = 0.0
    teacher = fsp_matrices([f.detach() for f in g_t])
    for s, t in zip(fsp_matrices(g_s), teacher, strict=True):
        total = total + (s - t).pow(2).mean()
    assert not isinstance(total, float)
    return total


def check_channels(student: Sequence[Shape], teacher: Sequence[Shape]) -> None:
    """FSP compares Gram matrices entry by entry: the channel counts must agree (FSP.py)."""
    s_c, t_c = [s[0] for s in student], [t[0] for t in teacher]
    if s_c != t_c:
        raise UsageError(
            f"fsp needs the student's and the teacher's maps to have the same channels, but "
            f"they have {s_c} and {t_c}; choose a student of the teacher's widths "
            "(resnet20 for resnet56, say) or another method"
        )


class FSPSettings(FeatureLayers):
    """FSP's settings (Yim et al. 2017, as the CRD benchmark runs it)."""

    fsp_weight: float | None = Field(None, ge=0, description="FSP weight (preliminary stage).")
    fsp_init_epochs: int | None = Field(
        None, ge=0, description="FSP preliminary epochs (30 of 240, scaled)."
    )


def _build(settings: FSPSettings, context: Context) -> dict[str, Part]:
    student, teacher = stage_pair(context)
    same_count("fsp", student.maps, teacher.maps)
    check_channels(student.maps, teacher.maps)

    def preliminary(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        return fsp_loss(out["stages"].maps, out["t_stages"].maps)

    # no term after the preliminary stage (RepDistiller's loops.py: loss_kd = 0)
    return {"fsp": Part(None, preliminary=preliminary)}


FSP = register(
    Method(
        name="fsp",
        order=76,
        parts=("fsp",),
        settings=FSPSettings,
        preset={"ce_weight": 1.0, "fsp_weight": 50},
        build=_build,
        recorded=("fsp_init_epochs",),
        stages=True,
        resolve=scaled_setting("fsp_init_epochs", INIT_EPOCHS),
        preliminary=lambda settings: settings.fsp_init_epochs,
    )
)


# KD added as the CRD benchmark combines it (RepDistiller's README: `-a 1` beside the method's
# `-b`, CE 1): CE 1, KD 1
KD_FSP = register(
    Preset("kd+fsp", order=77, preset={"ce_weight": 1.0, "kd_weight": 1.0, "fsp_weight": 50})
)
