"""Overhaul of feature distillation (Heo et al., "A Comprehensive Overhaul of Feature
Distillation", ICCV 2019): each student pre-activation, through a 1x1 conv and BN connector
(the method's own, trained with the student), is pulled towards the teacher's pre-activation
with a partial L2 that ignores the teacher's negative values below a margin: the expected
value of the teacher's BN output where it is negative, E[x | x < 0] for x ~ N(bias, weight^2),
or -3 |weight| where that side holds under 0.1 % (mdistiller's distillers/OFD.py). Stage i of
n counts 1 / 2^(n - i - 1), the elements are summed and the batch averaged; the teacher's
map is average-pooled to the student's size. Defaults (mdistiller's engine/cfg.py OFD): CE 1,
the OFD term 0.001, connector kernel 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from icckd_cli.base.errors import UsageError
from icckd_cli.methods.feature_maps import FeatureLayers, stage_pair
from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:
    from torch import Tensor, nn


def margin(weight: float, bias: float) -> float:
    """E[x | x < 0] for x ~ N(bias, weight^2), or -3 |weight| if P(x < 0) <= 0.001."""
    s, m = abs(weight), bias
    if s == 0:  # a constant channel: its value where negative, else nothing to ignore
        return min(m, 0.0)
    below = 0.5 * (1 + math.erf(-m / s / math.sqrt(2)))  # the normal CDF at -m / s
    if below > 0.001:
        return -s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / below + m
    return -3 * s


def margins(norms: Sequence[tuple[Sequence[float], Sequence[float]]]) -> list[Tensor]:
    """One (1, C, 1, 1) margin per stage from its BN's (weights, biases)."""
    import torch

    return [
        torch.tensor([margin(w, b) for w, b in zip(ws, bs, strict=True)]).view(1, -1, 1, 1)
        for ws, bs in norms
    ]


def partial_l2(source: Tensor, target: Tensor, margin: Tensor) -> Tensor:
    """sum over C, H, W of the batch mean of the partial L2: (B, C, H, W) x2, (1, C, 1, 1) -> ()."""
    t = target.detach()
    m = margin.to(source)
    loss = (
        (source - m).pow(2) * ((source > m) & (t <= m)).to(source.dtype)
        + (source - t).pow(2) * ((source > t) & (t > m) & (t <= 0)).to(source.dtype)
        + (source - t).pow(2) * (t > 0).to(source.dtype)
    )
    return loss.abs().mean(0).sum()


def ofd_loss(g_s: Sequence[Tensor], g_t: Sequence[Tensor], margins: Sequence[Tensor]) -> Tensor:
    """sum_i partial_l2(s_i, pool(t_i), m_i) / 2^(n - i - 1), connected student maps: -> ()."""
    import torch.nn.functional as F

    n = len(g_s)
    total: Tensor | float = 0.0
    for i, (s, t, m) in enumerate(zip(g_s, g_t, margins, strict=True)):
        pooled = F.adaptive_avg_pool2d(t, (s.shape[2], s.shape[3]))
        total = total + partial_l2(s, pooled, m) / 2 ** (n - i - 1)
    assert not isinstance(total, float)
    return total


def connectors(s_channels: Sequence[int], t_channels: Sequence[int], kernel: int = 1) -> nn.Module:
    """Per stage a conv (no bias, He-normal fan-out) and BN from C_s to C_t channels."""
    from torch import nn

    out = nn.ModuleList()
    for s, t in zip(s_channels, t_channels, strict=True):
        conv = nn.Conv2d(s, t, kernel, stride=1, padding=(kernel - 1) // 2, bias=False)
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel * kernel * t)))
        out.append(nn.Sequential(conv, nn.BatchNorm2d(t)))
    return out


class OFDSettings(FeatureLayers):
    """OFD's settings (Heo et al. 2019, mdistiller's CIFAR-100 configuration)."""

    ofd_weight: float | None = Field(None, ge=0, description="OFD weight.")
    ofd_kernel: int = Field(1, ge=1)  # mdistiller's OFD.CONNECTOR.KERNEL_SIZE


def _build(settings: OFDSettings, context: Context) -> dict[str, Part]:
    student, teacher = stage_pair(context)
    if context.teacher_norms is None:
        raise UsageError(
            "ofd takes its margins from the BatchNorm before each of the teacher's stage "
            "ReLUs, and this teacher (or its --teacher-feature-layers) has none to read; "
            "choose a teacher of the zoo other than ShuffleV2 and tv_mobilenet_v2"
        )
    # the deepest stages both networks have, as mdistiller's _align_list
    n = min(len(student.preact) - 1, len(teacher.preact) - 1, len(context.teacher_norms))
    s_c = [c for c, _, _ in student.preact[-n:]]
    t_c = [c for c, _, _ in teacher.preact[-n:]]
    conn: Any = connectors(s_c, t_c, settings.ofd_kernel)
    stage_margins = margins(context.teacher_norms[-n:])

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        g_s = [c(f) for c, f in zip(conn, out["stages"].preact[-n:], strict=True)]
        return ofd_loss(g_s, [f.detach() for f in out["t_stages"].preact[-n:]], stage_margins)

    return {"ofd": Part(term, module=conn)}


OFD = register(
    Method(
        name="ofd",
        order=80,
        parts=("ofd",),
        settings=OFDSettings,
        preset={"ce_weight": 1.0, "ofd_weight": 0.001},
        build=_build,
        recorded=("ofd_kernel",),
        stages=True,
    )
)


# KD added as the CRD benchmark combines it (RepDistiller's README: `-a 1` beside the method's
# `-b`, CE 1): CE 1, KD 1
KD_OFD = register(
    Preset("kd+ofd", order=81, preset={"ce_weight": 1.0, "kd_weight": 1.0, "ofd_weight": 0.001})
)
