"""VGG-BN nets for CIFAR (vgg8 ... vgg19, fully connected layers removed), CRD layout."""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from icckd_cli.models.base import Stages, ZooModel, init_weights
from icckd_cli.models.registry import register


def _stage(in_ch: int, widths: list[int]) -> nn.Sequential:
    """conv3x3(bias)-BN-ReLU per width, minus the final ReLU (applied in forward)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_ch, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        in_ch = width
    # Dropping the trailing ReLU keeps the module indices (and so the keys) of the reference.
    return nn.Sequential(*layers[:-1])


class VGG(ZooModel):
    """Five conv stages; max-pool between the first four, global average pool at the end."""

    def __init__(self, arch: str, cfg: list[list[int]], num_classes: int = 100) -> None:
        super().__init__(arch, num_classes, feature_dim=cfg[4][-1])
        self.block0 = _stage(3, cfg[0])
        self.block1 = _stage(cfg[0][-1], cfg[1])
        self.block2 = _stage(cfg[1][-1], cfg[2])
        self.block3 = _stage(cfg[2][-1], cfg[3])
        self.block4 = _stage(cfg[3][-1], cfg[4])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        init_weights(self, linear_std=0.01, zero_linear_bias=True)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 512)."""
        # As in the reference, pool3 runs only for 64x64 (Tiny-ImageNet) inputs so block4 sees
        # 4x4 maps either way; this branches on a static shape, not on data.
        tiny_imagenet = x.shape[2] == 64
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        if tiny_imagenet:
            x = self.pool3(x)
        x = F.relu(self.block4(x))
        return self.pool4(x).flatten(1)

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, feature_dim) -> (B, num_classes)."""
        return self.classifier(feats)

    def forward_stages(self, x: Tensor) -> Stages:
        """Each block's ReLU output before its pool (B, 64..512, H / 2^i, ...), as
        RepDistiller's vgg; the pre-activations are the blocks' last BN outputs."""
        tiny_imagenet = x.shape[2] == 64
        x = F.relu(self.block0(x))
        maps, preact = [x], [x]
        blocks = (self.block1, self.block2, self.block3, self.block4)
        pools = (self.pool0, self.pool1, self.pool2, self.pool3)
        for i, (block, pool) in enumerate(zip(blocks, pools, strict=True)):
            if i < 3 or tiny_imagenet:
                x = pool(x)
            pre = block(x)
            x = F.relu(pre)
            maps.append(x)
            preact.append(pre)
        pooled = self.pool4(x).flatten(1)
        return Stages(maps, preact, pooled, self.classifier(pooled))

    def stage_norms(self) -> list[nn.BatchNorm2d]:
        """The last BN of blocks 1 to 4 (their trailing ReLU runs in forward)."""
        norms = [b[-1] for b in (self.block1, self.block2, self.block3, self.block4)]
        return [n for n in norms if isinstance(n, nn.BatchNorm2d)]


_CFGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}

for _name, _cfg in _CFGS.items():
    register(_name, _cfg[4][-1], partial(VGG, _name, _cfg))
