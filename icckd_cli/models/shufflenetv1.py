"""ShuffleNet v1 (groups=3) for CIFAR as CRD's ShuffleV1: 1x1 stem, no max-pool, `linear` head."""

from __future__ import annotations

from functools import partial
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icckd_cli.models.base import Stages, ZooModel, global_pool, residual_stages
from icckd_cli.models.registry import register


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """(B, C, H, W) -> (B, C, H, W) with channels interleaved across `groups`."""
    if groups == 1:
        return x
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """Grouped 1x1, shuffle, depthwise 3x3, grouped 1x1; stride 2 concatenates an avg-pool."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = out_ch // 4
        # The 24-channel stem output is too narrow to split, so the first 1x1 is ungrouped.
        self.first_groups = 1 if in_ch == 24 else groups
        self.stride = stride
        self.conv1 = nn.Conv2d(in_ch, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_ch, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch [+ in_ch if stride 2], H / stride, W / stride)."""
        return F.relu(self.preact(x))

    def preact(self, x: Tensor) -> Tensor:
        """The unit's output before its last ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)
        return out + x


class ShuffleNetV1(ZooModel):
    """Three stages of ShuffleUnits, each starting with a stride-2 concatenating unit."""

    def __init__(
        self,
        arch: str,
        stage_channels: tuple[int, int, int],
        stage_blocks: tuple[int, int, int],
        groups: int,
        num_classes: int = 100,
    ) -> None:
        super().__init__(arch, num_classes, feature_dim=stage_channels[-1])
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_ch = 24
        stages = []
        for out_ch, blocks in zip(stage_channels, stage_blocks, strict=True):
            # The downsampling unit's output is concatenated with its pooled input.
            layers = [ShuffleUnit(in_ch, out_ch - in_ch, 2, groups)]
            layers += [ShuffleUnit(out_ch, out_ch, 1, groups) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(stage_channels[-1], num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 960)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return global_pool(x)

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, feature_dim) -> (B, num_classes)."""
        return self.linear(feats)

    def forward_stages(self, x: Tensor) -> Stages:
        """Stem (B, 24, H, W), then the three stages (B, 240/480/960, H / 2^i, ...)."""
        x = F.relu(self.bn1(self.conv1(x)))
        return residual_stages(x, (self.layer1, self.layer2, self.layer3), self.linear)

    def stage_norms(self) -> list[nn.BatchNorm2d]:
        """Each stage's last bn3 (before the residual sum and ReLU)."""
        return [cast(ShuffleUnit, s[-1]).bn3 for s in (self.layer1, self.layer2, self.layer3)]


register("ShuffleV1", 960, partial(ShuffleNetV1, "ShuffleV1", (240, 480, 960), (4, 8, 4), 3))
