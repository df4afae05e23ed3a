"""ImageNet networks built by torchvision's own builders (tv_resnet18/34/50, tv_mobilenet_v2).

The torchvision modules are adopted as they are, under the names torchvision gives them, so
the state dict has torchvision's keys and shapes and its published `.pth` files load with
strict=True; only the forward is split into pooled features and head.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

if TYPE_CHECKING:
    from torchvision.models import ResNet

from icckd_cli.base.torchvision_check import check_torchvision
from icckd_cli.models.base import Stages, ZooModel, global_pool, residual_stages
from icckd_cli.models.registry import register

IMAGENET_SIZE = 224  # the crop torchvision's ImageNet weights were trained and evaluated on


class TvResNet(ZooModel):
    """torchvision's ResNet (7x7 stem, max-pool, 4 stages), same keys as torchvision."""

    def __init__(self, arch: str, builder: Callable[..., ResNet], num_classes: int = 100):
        net = builder(weights=None, num_classes=num_classes)
        super().__init__(arch, num_classes, feature_dim=net.fc.in_features)
        # the same attribute names in the same order: the state dict matches torchvision's
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.layer4, self.fc = net.layer4, net.fc

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 512 or 2048); H = W = 224 ends at 7x7 before pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return global_pool(x)

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, feature_dim) -> (B, num_classes)."""
        return self.fc(feats)

    def _stages(self) -> tuple[nn.Sequential, ...]:
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def forward_stages(self, x: Tensor) -> Stages:
        """The pooled stem (B, 64, H / 4, W / 4), then the four stages (H / 4 ... H / 32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return residual_stages(x, self._stages(), self.fc, _block_preact)

    def stage_norms(self) -> list[nn.BatchNorm2d]:
        """The last BN of each stage's last block (bn2 of a basic block, bn3 of a bottleneck)."""
        last = [stage[-1] for stage in self._stages()]
        return [getattr(b, "bn3", None) or b.bn2 for b in last]  # type: ignore[misc]


def _block_preact(block: nn.Module, x: Tensor) -> Tensor:
    """A torchvision ResNet block's residual sum, before its last ReLU (the ops of its forward)."""
    b: Any = block
    out = b.relu(b.bn1(b.conv1(x)))
    out = b.bn2(b.conv2(out))
    if hasattr(b, "conv3"):  # a bottleneck
        out = b.bn3(b.conv3(b.relu(out)))
    shortcut = x if b.downsample is None else b.downsample(x)
    return out + shortcut


# indices in torchvision's MobileNetV2 `features` of the last layer at each resolution
_TV_MOBILENET_ENDS = (1, 3, 6, 13, 18)


class TvMobileNetV2(ZooModel):
    """torchvision's MobileNetV2 (width 1.0): `features`, then dropout and `classifier.1`."""

    def __init__(self, arch: str, num_classes: int = 100) -> None:
        check_torchvision()
        from torchvision.models import mobilenet_v2

        net = mobilenet_v2(weights=None, num_classes=num_classes)
        super().__init__(arch, num_classes, feature_dim=net.last_channel)
        self.features = net.features
        self.classifier = net.classifier  # Dropout(0.2), Linear(1280, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1280)."""
        return global_pool(self.features(x))

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, 1280) -> (B, num_classes)."""
        return self.classifier(feats)

    def forward_stages(self, x: Tensor) -> Stages:
        """The last layer at each resolution of `features` (H / 2 ... H / 32); linear
        bottlenecks end in no ReLU, so the pre-activations are the maps."""
        maps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TV_MOBILENET_ENDS:
                maps.append(x)
        pooled = global_pool(x)
        return Stages(maps, list(maps), pooled, self.classifier(pooled))


def _resnet(depth: int) -> Callable[..., ResNet]:
    """torchvision's builder for ResNet-`depth`, imported when a model is built."""

    def build(**kw: object) -> ResNet:
        check_torchvision()
        from torchvision import models

        net: ResNet = getattr(models, f"resnet{depth}")(**kw)
        return net

    return build


for _depth, _dim in ((18, 512), (34, 512), (50, 2048)):
    _name = f"tv_resnet{_depth}"
    register(_name, _dim, partial(TvResNet, _name, _resnet(_depth)), input_size=IMAGENET_SIZE)
register(
    "tv_mobilenet_v2", 1280, partial(TvMobileNetV2, "tv_mobilenet_v2"), input_size=IMAGENET_SIZE
)
