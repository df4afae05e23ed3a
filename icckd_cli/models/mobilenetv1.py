"""MobileNet-v1 for ImageNet, the student of the ResNet50 -> MobileNetV1 benchmark.

Layout as in mdistiller (mdistiller/models/imagenet/mobilenetv1.py): one Sequential `model`
of a strided 3x3 stem and 13 depthwise-separable blocks, then a pool; the head is `fc`.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from icckd_cli.models.base import Stages, ZooModel, global_pool, init_weights
from icckd_cli.models.registry import register
from icckd_cli.models.tvnets import IMAGENET_SIZE


def _stem(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """3x3 conv, BN, ReLU: keys .0 (conv), .1 (BN)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def _separable(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 (.0, .1) then pointwise 1x1 (.3, .4), each followed by BN and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


# (output channels, stride) of the 13 separable blocks after the 32-channel stem
_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip


# indices in `model` of the last block at each resolution (56, 28, 14, 7 px at 224)
_STAGE_ENDS = (3, 5, 11, 13)


class MobileNetV1(ZooModel):
    """Stride 32 overall: 224x224 inputs end at 7x7 before the pool."""

    def __init__(self, arch: str = "MobileNetV1", num_classes: int = 1000) -> None:
        super().__init__(arch, num_classes, feature_dim=_BLOCKS[-1][0])
        layers: list[nn.Module] = [_stem(3, 32, 2)]
        in_ch = 32
        for out_ch, stride in _BLOCKS:
            layers.append(_separable(in_ch, out_ch, stride))
            in_ch = out_ch
        # the reference ends `model` with a 7x7 average pool (no parameters, so no keys);
        # the adaptive pool is the same at 224 px and keeps smaller inputs working
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1024)."""
        return global_pool(self.model(x))

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, 1024) -> (B, num_classes)."""
        return self.fc(feats)

    def forward_stages(self, x: Tensor) -> Stages:
        """The 112-px map after block 1, then the last block at 56, 28, 14 and 7 px (H / 4 ...
        H / 32); a pre-activation is that block before its last ReLU."""
        model: Any = self.model
        x = model[0:2](x)
        maps, preact = [x], [x]
        start = 2
        for end in _STAGE_ENDS:
            block = model[end]
            pre = block[:-1](model[start:end](x))
            x = torch.relu(pre)  # not the block's in-place ReLU: `pre` is kept
            maps.append(x)
            preact.append(pre)
            start = end + 1
        pooled = global_pool(model[start:](x))
        return Stages(maps, preact, pooled, self.fc(pooled))

    def stage_norms(self) -> list[nn.BatchNorm2d]:
        """The pointwise BN of each stage's last block."""
        model: Any = self.model
        return [cast(nn.BatchNorm2d, model[end][-2]) for end in _STAGE_ENDS]


register("MobileNetV1", 1024, MobileNetV1, input_size=IMAGENET_SIZE)
