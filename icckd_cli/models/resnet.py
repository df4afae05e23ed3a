"""CIFAR ResNets (resnet8 ... resnet110, resnet8x4, resnet32x4) with the CRD state-dict layout."""

from __future__ import annotations

from functools import partial
from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from icckd_cli.models.base import Stages, ZooModel, global_pool, init_weights, residual_stages
from icckd_cli.models.registry import register


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual; projects the shortcut when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )

    def preact(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> the residual sum before the block's last ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)."""
        return F.relu(self.preact(x))


class CifarResNet(ZooModel):
    """3-stage post-activation ResNet of depth 6n+2; widths = (stem, stage1, stage2, stage3)."""

    def __init__(
        self, arch: str, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100
    ) -> None:
        super().__init__(arch, num_classes, feature_dim=widths[3])
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = _conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._stage(widths[0], widths[1], blocks, stride=1)
        self.layer2 = self._stage(widths[1], widths[2], blocks, stride=2)
        self.layer3 = self._stage(widths[2], widths[3], blocks, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

    @staticmethod
    def _stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_ch, out_ch, stride)]
        layers += [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, widths[3])."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return global_pool(x)

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, feature_dim) -> (B, num_classes)."""
        return self.fc(feats)

    def forward_stages(self, x: Tensor) -> Stages:
        """Stem (B, w0, H, W), then each stage (B, w_i, H / 2^(i-1), ...), as RepDistiller."""
        x = F.relu(self.bn1(self.conv1(x)))
        return residual_stages(x, (self.layer1, self.layer2, self.layer3), self.fc)

    def stage_norms(self) -> list[nn.BatchNorm2d]:
        """Each stage's last bn2 (before the residual sum and ReLU)."""
        stages = (self.layer1, self.layer2, self.layer3)
        return [cast(BasicBlock, stage[-1]).bn2 for stage in stages]


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)
_CONFIGS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "resnet8": (8, _NARROW),
    "resnet14": (14, _NARROW),
    "resnet20": (20, _NARROW),
    "resnet32": (32, _NARROW),
    "resnet44": (44, _NARROW),
    "resnet56": (56, _NARROW),
    "resnet110": (110, _NARROW),
    "resnet8x4": (8, _WIDE),
    "resnet32x4": (32, _WIDE),
}

for _name, (_depth, _widths) in _CONFIGS.items():
    register(_name, _widths[3], partial(CifarResNet, _name, _depth, _widths))
