"""Knowledge review (Chen et al., "Distilling Knowledge via Knowledge Review", CVPR 2021):
the student's stage outputs and pooled features, from the deepest up, pass through
attention-based fusion (ABF) modules, each fusing its level with the residual of the level
below by two attention maps, and the results match the teacher's pre-activations and pooled
features by a hierarchical context loss (MSE at full size and average-pooled to 4, 2 and 1,
weights halving, normalised), summed over the levels (mdistiller's distillers/ReviewKD.py).
Defaults (mdistiller's engine/cfg.py REVIEWKD): CE 1, ReviewKD 1 warmed up linearly over the
first 20 of 240 epochs (scaled to the run), middle width min(512, the deepest student width),
the student read after its activations. The ABF modules are the method's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from icckd_cli.base.errors import UsageError
from icckd_cli.methods.feature_maps import FeatureLayers, scaled_setting, stage_pair
from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:
    from torch import Tensor, nn

WARMUP_EPOCHS = 20  # mdistiller REVIEWKD.WARMUP_EPOCHS, of 240 epochs
MAX_MID = 512  # mdistiller REVIEWKD.MAX_MID_CHANNEL


def hcl_loss(g_s: Sequence[Tensor], g_t: Sequence[Tensor]) -> Tensor:
    """sum over levels of (MSE + sum_l 2^-k MSE of pooled-to-l maps) / (1 + sum_l 2^-k), l in
    (4, 2, 1) below the map's side: (B, C, H, W) pairs -> ()."""
    import torch.nn.functional as F

    total: Tensor | float = 0.0
    for fs, ft in zip(g_s, g_t, strict=True):
        t = ft.detach()
        loss = F.mse_loss(fs, t)
        weight, norm = 1.0, 1.0
        for side in (4, 2, 1):
            if side >= fs.shape[2]:
                continue
            weight /= 2.0
            pooled = F.mse_loss(F.adaptive_avg_pool2d(fs, side), F.adaptive_avg_pool2d(t, side))
            loss = loss + pooled * weight
            norm += weight
        total = total + loss / norm
    assert not isinstance(total, float)
    return total


def abf(in_c: int, mid_c: int, out_c: int, fuse: bool) -> nn.Module:
    """One ABF: `conv1` (1x1 to mid, BN), `att` (1x1 of both to 2 sigmoid maps) where it
    fuses, `conv2` (3x3 to out, BN); convs initialised Kaiming-uniform with a = 1."""
    from torch import nn

    first, second = (
        nn.Conv2d(in_c, mid_c, 1, bias=False),
        nn.Conv2d(mid_c, out_c, 3, 1, 1, bias=False),
    )
    nn.init.kaiming_uniform_(first.weight, a=1)
    nn.init.kaiming_uniform_(second.weight, a=1)
    parts: dict[str, nn.Module] = {
        "conv1": nn.Sequential(first, nn.BatchNorm2d(mid_c)),
        "conv2": nn.Sequential(second, nn.BatchNorm2d(out_c)),
    }
    if fuse:
        parts["att"] = nn.Sequential(nn.Conv2d(mid_c * 2, 2, 1), nn.Sigmoid())
    return nn.ModuleDict(parts)


def abf_forward(
    module: nn.Module, x: Tensor, residual: Tensor | None, side: int, out_side: int
) -> tuple[Tensor, Tensor]:
    """(output (B, out, out_side, out_side), residual for the next level (B, mid, ...))."""
    import torch
    import torch.nn.functional as F

    parts: Any = module
    n, _, h, w = x.shape
    x = parts["conv1"](x)
    if "att" in parts:
        assert residual is not None
        y = F.interpolate(residual, (side, side), mode="nearest")
        z = parts["att"](torch.cat([x, y], dim=1))
        x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
    if x.shape[-1] != out_side:
        x = F.interpolate(x, (out_side, out_side), mode="nearest")
    return parts["conv2"](x), x


def fusion(in_channels: Sequence[int], out_channels: Sequence[int]) -> nn.Module:
    """The ABFs from the deepest level (pooled features, no fusion) to the shallowest."""
    from torch import nn

    mid = min(MAX_MID, in_channels[-1])
    n = len(in_channels)
    built = [
        abf(c, mid, o, i < n - 1)
        for i, (c, o) in enumerate(zip(in_channels, out_channels, strict=True))
    ]
    return nn.ModuleList(built[::-1])


def review(
    modules: nn.Module, levels: Sequence[Tensor], sides: Sequence[int], out_sides: Sequence[int]
) -> list[Tensor]:
    """The student's levels (shallowest first, the pooled features last as (B, C, 1, 1)) through
    the ABFs, deepest first; the outputs come back shallowest first, each of `out_sides`."""
    abfs: Any = modules
    order = list(range(len(levels)))[::-1]
    out, residual = abf_forward(
        abfs[0], levels[order[0]], None, sides[order[0]], out_sides[order[0]]
    )
    results = [out]
    for k, i in enumerate(order[1:], start=1):
        out, residual = abf_forward(abfs[k], levels[i], residual, sides[i], out_sides[i])
        results.insert(0, out)
    return results


class ReviewKDSettings(FeatureLayers):
    """ReviewKD's settings (Chen et al. 2021, mdistiller's CIFAR-100 configuration)."""

    reviewkd_weight: float | None = Field(None, ge=0, description="ReviewKD weight.")
    # None: 20 of 240 epochs, scaled
    reviewkd_warmup: int | None = Field(None, ge=0, description="ReviewKD warm-up epochs.")


def _build(settings: ReviewKDSettings, context: Context) -> dict[str, Part]:
    student, teacher = stage_pair(context)
    # each level's (C, side): the stages after the stem, then the pooled features at 1 x 1
    s_levels = [(c, h, w) for c, h, w in student.maps[1:]] + [(student.pooled, 1, 1)]
    t_levels = [(c, h, w) for c, h, w in teacher.preact[1:]] + [(teacher.pooled, 1, 1)]
    n = min(len(s_levels), len(t_levels))  # the deepest levels both have
    s_levels, t_levels = s_levels[-n:], t_levels[-n:]
    if any(h != w for _, h, w in s_levels + t_levels):
        raise UsageError(
            "reviewkd fuses square maps (its attention resizes each level to side x side), "
            "and these networks give non-square ones; choose square images or other layers"
        )
    sides, out_sides = [h for _, h, _ in s_levels], [h for _, h, _ in t_levels]
    modules = fusion([c for c, _, _ in s_levels], [c for c, _, _ in t_levels])
    warmup = settings.reviewkd_warmup or 0

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        s, t = out["stages"], out["t_stages"]
        levels = [*s.maps[1:], s.pooled[:, :, None, None]][-n:]
        targets = [*t.preact[1:], t.pooled[:, :, None, None]][-n:]
        # linear warm-up: epoch e (from 0) weighs (e + 1) / warmup until it reaches 1
        ramp = min((out["epoch"] + 1) / warmup, 1.0) if warmup else 1.0
        return ramp * hcl_loss(review(modules, levels, sides, out_sides), targets)

    return {"reviewkd": Part(term, module=modules)}


REVIEWKD = register(
    Method(
        name="reviewkd",
        order=82,
        parts=("reviewkd",),
        settings=ReviewKDSettings,
        preset={"ce_weight": 1.0, "reviewkd_weight": 1},
        build=_build,
        recorded=("reviewkd_warmup",),
        stages=True,
        resolve=scaled_setting("reviewkd_warmup", WARMUP_EPOCHS),
    )
)


# KD added as the CRD benchmark combines it (RepDistiller's README: `-a 1` beside the method's
# `-b`, CE 1): CE 1, KD 1
KD_REVIEWKD = register(
    Preset(
        "kd+reviewkd", order=83, preset={"ce_weight": 1.0, "kd_weight": 1.0, "reviewkd_weight": 1}
    )
)
