"""ShuffleNet v2 (1.0x) for CIFAR as CRD's ShuffleV2: 1x1 stem, no max-pool, `linear` head."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icckd_cli.models.base import Stages, ZooModel, global_pool
from icckd_cli.models.registry import register
from icckd_cli.models.shufflenetv1 import channel_shuffle


class SplitUnit(nn.Module):
    """Keep half the channels, transform the other half (1x1, dw 3x3, 1x1), then shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.keep = channels // 2
        half = channels - self.keep
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        kept, rest = x[:, : self.keep], x[:, self.keep :]
        out = F.relu(self.bn1(self.conv1(rest)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([kept, out], 1), 2)


class DownUnit(nn.Module):
    """Two stride-2 branches (dw->1x1 and 1x1->dw->1x1) concatenated, then shuffled."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = out_ch // 2
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, stride=2, padding=1, groups=in_ch, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv2 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, 2 * (out_ch // 2), H / 2, W / 2)."""
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(ZooModel):
    """Three stages (a DownUnit then SplitUnits) and a 1x1 conv to the feature width."""

    def __init__(
        self,
        arch: str,
        stage_channels: tuple[int, int, int],
        stage_blocks: tuple[int, int, int],
        last_ch: int,
        num_classes: int = 100,
    ) -> None:
        super().__init__(arch, num_classes, feature_dim=last_ch)
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_ch = 24
        stages = []
        for out_ch, blocks in zip(stage_channels, stage_blocks, strict=True):
            layers: list[nn.Module] = [DownUnit(in_ch, out_ch)]
            layers += [SplitUnit(out_ch) for _ in range(blocks)]
            stages.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(in_ch, last_ch, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(last_ch)
        self.linear = nn.Linear(last_ch, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1024)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return global_pool(F.relu(self.bn2(self.conv2(x))))

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, feature_dim) -> (B, num_classes)."""
        return self.linear(feats)

    def forward_stages(self, x: Tensor) -> Stages:
        """Stem (B, 24, H, W), then the three stages (B, 116/232/464, H / 2^i, ...); half of
        a unit's channels pass through untouched, so the maps serve as pre-activations."""
        x = F.relu(self.bn1(self.conv1(x)))
        maps = [x]
        for stage in (self.layer1, self.layer2, self.layer3):
            x = stage(x)
            maps.append(x)
        pooled = global_pool(F.relu(self.bn2(self.conv2(x))))
        return Stages(maps, list(maps), pooled, self.linear(pooled))


register(
    "ShuffleV2",
    1024,
    partial(ShuffleNetV2, "ShuffleV2", (116, 232, 464), (3, 7, 3), 1024),
)
