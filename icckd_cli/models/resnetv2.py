"""ResNet50 with a CIFAR stem (3x3 conv, no max-pool): CRD's resnetv2 layout, `linear` head."""

from __future__ import annotations

from functools import partial
from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from icckd_cli.models.base import Stages, ZooModel, global_pool, init_weights, residual_stages
from icckd_cli.models.registry import register

_EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a projected shortcut when needed."""

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * _EXPANSION
        self.conv1 = nn.Conv2d(in_ch, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        # An empty Sequential is the identity and contributes no keys, as in the reference.
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )

    def preact(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> the residual sum before the block's last ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, 4 * planes, H / stride, W / stride)."""
        return F.relu(self.preact(x))


class BottleneckResNet(ZooModel):
    """4-stage bottleneck ResNet (64..512 planes) for small images."""

    def __init__(self, arch: str, stage_blocks: tuple[int, ...], num_classes: int = 100) -> None:
        super().__init__(arch, num_classes, feature_dim=512 * _EXPANSION)
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_ch = 64
        stages = []
        for planes, blocks, stride in zip(
            (64, 128, 256, 512), stage_blocks, (1, 2, 2, 2), strict=True
        ):
            layers = [Bottleneck(in_ch, planes, stride)]
            in_ch = planes * _EXPANSION
            layers += [Bottleneck(in_ch, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512 * _EXPANSION, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 2048)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return global_pool(x)

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, feature_dim) -> (B, num_classes)."""
        return self.linear(feats)

    def _stages(self) -> tuple[nn.Sequential, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def forward_stages(self, x: Tensor) -> Stages:
        """Stem (B, 64, H, W), then the four stages (B, 256..2048, H / 2^(i-1), ...)."""
        x = F.relu(self.bn1(self.conv1(x)))
        return residual_stages(x, self._stages(), self.linear)

    def stage_norms(self) -> list[nn.BatchNorm2d]:
        """Each stage's last bn3 (before the residual sum and ReLU)."""
        return [cast(Bottleneck, stage[-1]).bn3 for stage in self._stages()]


register("ResNet50", 512 * _EXPANSION, partial(BottleneckResNet, "ResNet50", (3, 4, 6, 3)))
