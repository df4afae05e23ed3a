"""What the feature-map methods share: matching two maps' sizes, and the regressors and
connectors that map a student's map onto the teacher's (RepDistiller's models/util.py).

torch is imported inside each function: the methods' settings load without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from icckd_cli.base.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from icckd_cli.methods.registry import Context
    from icckd_cli.models.features import StageShapes

Shape = tuple[int, int, int]  # (C, H, W) of one map


def match_sizes(f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two (B, C, H, W) maps to the smaller's side, a square H x H
    target as RepDistiller's distiller_zoo matches sizes."""
    import torch.nn.functional as F

    s_h, t_h = f_s.shape[2], f_t.shape[2]
    if s_h > t_h:
        f_s = F.adaptive_avg_pool2d(f_s, (t_h, t_h))
    elif s_h < t_h:
        f_t = F.adaptive_avg_pool2d(f_t, (s_h, s_h))
    return f_s, f_t


def conv_regressor(method: str, s: Shape, t: Shape, relu: bool = True) -> nn.Module:
    """A convolutional regressor (RepDistiller's models/util.py ConvReg): a conv (strided,
    transposed or valid, as the sides require) to the teacher's channels, BN, ReLU if `relu`."""
    from torch import nn

    (s_c, s_h, s_w), (t_c, t_h, t_w) = s, t
    conv: nn.Module
    if s_h == 2 * t_h:
        conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
    elif 2 * s_h == t_h:
        conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
    elif s_h >= t_h and s_w >= t_w:
        conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
    else:
        raise UsageError(
            f"{method}: the student's {s_h}x{s_w} map cannot be regressed onto the teacher's "
            f"{t_h}x{t_w} (the student's must be as large, or half or twice the size); "
            "choose other layers with --feature-layers or another student"
        )
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(t_c)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def same_count(method: str, student: Sequence[Shape], teacher: Sequence[Shape]) -> None:
    """Refuse, in one line, two lists of maps that cannot be paired one to one."""
    if len(student) != len(teacher):
        raise UsageError(
            f"{method} pairs the student's maps with the teacher's one to one, but the student "
            f"gives {len(student)} and the teacher {len(teacher)}; name as many layers of each "
            "with --feature-layers, or choose a student of the teacher's family"
        )


class FeatureLayers(BaseModel):
    """Which maps the feature methods read: each network's stages, or the layers named here
    (module names as in the state-dict keys, in the order to pair them)."""

    feature_layers: list[str] | None = Field(
        None, description="Student layers the feature methods read (default: its stages)."
    )
    teacher_feature_layers: list[str] | None = Field(
        None, description="Teacher layers the feature methods read (default: its stages)."
    )


def stage_pair(context: Context) -> tuple[StageShapes, StageShapes]:
    """The student's and the teacher's map shapes, which the run measures for such methods."""
    if context.student_stages is None or context.teacher_stages is None:
        raise ValueError("a feature method was built without the networks' stage shapes")
    return context.student_stages, context.teacher_stages


def scaled_epochs(given: int | None, epochs: int, published: int, schedule: int = 240) -> int:
    """`given`, or `published` of a `schedule`-epoch run scaled to `epochs` (at least 1)."""
    if given is not None:
        return given
    return max(1, round(published * epochs / schedule))


def scaled_setting(name: str, published: int) -> Callable[[Any, Context], Any]:
    """A `resolve` hook: the setting `name` in epochs, given, or `published` of 240 scaled."""

    def resolve(settings: Any, context: Context) -> Any:
        value = scaled_epochs(getattr(settings, name), context.epochs, published)
        return settings.model_copy(update={name: value})

    return resolve
