"""Wide ResNets (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2) with the CRD state-dict layout."""

from __future__ import annotations

from functools import partial
from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from icckd_cli.models.base import Stages, ZooModel, global_pool, init_weights
from icckd_cli.models.registry import register


class WideBlock(nn.Module):
    """Pre-activation BN-ReLU-conv x2 residual block."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        # The checkpoint key is camel-case in the reference, so the attribute name must be too.
        self.convShortcut: nn.Conv2d | None = None
        if in_ch != out_ch:
            self.convShortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)."""
        return self.after_norm(x, self.bn1(x))

    def after_norm(self, x: Tensor, normed: Tensor) -> Tensor:
        """The block on `x` given its first BN's output (the stage's pre-activation)."""
        act = F.relu(normed)
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        # A projecting block takes its shortcut from the activated input, an identity block
        # from the raw one: that asymmetry is the reference's and trained weights depend on it.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return out + shortcut


class WideStage(nn.Module):
    """`blocks` WideBlocks; only the first changes width or resolution."""

    def __init__(self, blocks: int, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        layers = [WideBlock(in_ch, out_ch, stride)]
        layers += [WideBlock(out_ch, out_ch, 1) for _ in range(blocks - 1)]
        self.layer = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)."""
        return self.layer(x)


class WideResNet(ZooModel):
    """WRN-depth-widen for 32x32 inputs: 3 stages of width (16, 32, 64) * widen."""

    def __init__(self, arch: str, depth: int, widen: int, num_classes: int = 100) -> None:
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        super().__init__(arch, num_classes, feature_dim=widths[3])
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        blocks = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = WideStage(blocks, widths[0], widths[1], stride=1)
        self.block2 = WideStage(blocks, widths[1], widths[2], stride=2)
        self.block3 = WideStage(blocks, widths[2], widths[3], stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self, zero_linear_bias=True)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 64 * widen)."""
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return global_pool(F.relu(self.bn1(x)))

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, feature_dim) -> (B, num_classes)."""
        return self.fc(feats)

    def forward_stages(self, x: Tensor) -> Stages:
        """conv1 (B, 16, H, W), then each block's raw output; as RepDistiller's wrn, the
        pre-activation of a stage is the next BN's output (the next stage's first bn1)."""
        x = self.conv1(x)
        maps, preact = [x], [x]
        x = self.block1(x)
        for stage in (self.block2, self.block3):
            first = cast(WideBlock, stage.layer[0])
            normed = first.bn1(x)
            maps.append(x)
            preact.append(normed)
            x = stage.layer[1:](first.after_norm(x, normed))
        normed = self.bn1(x)
        maps.append(x)
        preact.append(normed)
        pooled = global_pool(F.relu(normed))
        return Stages(maps, preact, pooled, self.fc(pooled))

    def stage_norms(self) -> list[nn.BatchNorm2d]:
        """The BN that follows each stage (the next stage's first bn1, then the final bn1)."""
        firsts = [cast(WideBlock, stage.layer[0]) for stage in (self.block2, self.block3)]
        return [firsts[0].bn1, firsts[1].bn1, self.bn1]


for _name, _depth, _widen in (
    ("wrn_16_1", 16, 1),
    ("wrn_16_2", 16, 2),
    ("wrn_40_1", 40, 1),
    ("wrn_40_2", 40, 2),
):
    register(_name, 64 * _widen, partial(WideResNet, _name, _depth, _widen))
