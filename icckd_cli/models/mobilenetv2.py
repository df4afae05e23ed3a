"""MobileNetV2 for CIFAR as CRD's `mobile_half` (expansion T=6, width 0.5), CRD layout."""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import Tensor, nn

from icckd_cli.models.base import Stages, ZooModel, global_pool, init_weights
from icckd_cli.models.registry import register


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, linear project (1x1); residual when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.use_residual = stride == 1 and in_ch == out_ch
        # Even expand=1 keeps the 1x1 expansion conv: the reference checkpoints contain it.
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)."""
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


# (expansion, channels, repeats, first stride); expansion None means "use T".
_SETTINGS: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


# the block groups after which RepDistiller's mobile_half reads a stage (f1 ... f4)
_STAGE_ENDS = (1, 2, 4, 6)


class MobileNetV2(ZooModel):
    """MobileNetV2 with a stride-2 stem; 32x32 inputs end at 2x2 before pooling."""

    def __init__(self, arch: str, expansion: int, width: float, num_classes: int = 100) -> None:
        last_ch = int(1280 * width) if width > 1.0 else 1280
        super().__init__(arch, num_classes, feature_dim=last_ch)
        in_ch = int(32 * width)
        self.conv1 = _conv_bn_relu(3, in_ch, 3, 2)
        self.blocks = nn.ModuleList()
        for t, channels, repeats, stride in _SETTINGS:
            out_ch = int(channels * width)
            layers = []
            for i in range(repeats):
                layers.append(
                    InvertedResidual(in_ch, out_ch, stride if i == 0 else 1, t or expansion)
                )
                in_ch = out_ch
            self.blocks.append(nn.Sequential(*layers))
        self.conv2 = _conv_bn_relu(in_ch, last_ch, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(last_ch, num_classes))
        init_weights(self, linear_std=0.01, zero_linear_bias=True)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1280)."""
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        return global_pool(self.conv2(x))

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, feature_dim) -> (B, num_classes)."""
        return self.classifier(feats)

    def forward_stages(self, x: Tensor) -> Stages:
        """The stem, then the outputs after block groups 1, 2, 4 and 6 (RepDistiller's
        mobile_half); linear bottlenecks end in no ReLU, so the pre-activations are the maps."""
        x = self.conv1(x)
        maps = [x]
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in _STAGE_ENDS:
                maps.append(x)
        pooled = global_pool(self.conv2(x))
        return Stages(maps, list(maps), pooled, self.classifier(pooled))

    def stage_norms(self) -> list[nn.BatchNorm2d]:
        """The projecting BN of each stage's last block."""
        out = []
        for i in _STAGE_ENDS:
            stage: Any = self.blocks[i]
            block = stage[-1]
            last = block.conv[-1]
            assert isinstance(last, nn.BatchNorm2d)
            out.append(last)
        return out


register("MobileNetV2", 1280, partial(MobileNetV2, "MobileNetV2", 6, 0.5))
