"""The base class every zoo network shares, plus the pooling and init helpers they reuse."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Stages:
    """A network's intermediate features on one batch, as the feature-distillation methods
    read them (RepDistiller's `is_feat=True` list is `maps + [pooled]`)."""

    maps: list[Tensor]  # (B, C_i, H_i, W_i): the stem, then each stage's output
    preact: list[Tensor]  # the same points before their last ReLU (a map itself where none)
    pooled: Tensor  # (B, feature_dim), what `forward(x, return_features=True)` returns
    logits: Tensor  # (B, num_classes), equal to `forward(x)`


class ZooModel(nn.Module):
    """A classifier split into a pooled feature extractor and a linear head."""

    arch: str
    num_classes: int
    feature_dim: int
    model_args: dict[str, Any]  # the builder arguments it was made with ({} for the zoo)

    def __init__(self, arch: str, num_classes: int, feature_dim: int) -> None:
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.model_args = {}

    def fixed_input_size(self) -> int | None:
        """The only image side the network accepts (ViTs without dynamic sizes), else None."""
        return None

    def patch_grid(self, image_size: int) -> tuple[int, int] | None:
        """(rows, columns) of patches a vision Transformer cuts an image into; None for CNNs."""
        return None

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) images -> (B, feature_dim) pooled penultimate features."""
        raise NotImplementedError

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, feature_dim) features -> (B, num_classes) logits."""
        raise NotImplementedError

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B, 3, H, W) -> logits (B, num_classes), or (logits, feats (B, feature_dim))."""
        feats = self.forward_features(x)
        logits = self.forward_head(feats)
        if return_features:
            return logits, feats
        return logits

    def forward_stages(self, x: Tensor) -> Stages:
        """(B, 3, H, W) -> the stem and stage outputs, their pre-activations, features, logits."""
        raise NotImplementedError(f"{self.arch} exposes no intermediate stages")

    def stage_norms(self) -> list[nn.BatchNorm2d] | None:
        """The BatchNorm right before each stage's last ReLU (`maps[1:]`), where there is one
        per stage with the stage's channels (a method may read their statistics); None
        otherwise."""
        return None

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_classes={self.num_classes}, feature_dim={self.feature_dim}"


def residual_stages(
    x: Tensor,
    stages: Sequence[nn.Sequential],
    head: nn.Module,
    preact: Callable[[nn.Module, Tensor], Tensor] | None = None,
) -> Stages:
    """Stages ending in a block whose residual sum a ReLU follows: the stem output `x`, then
    each stage's output and its sum before that ReLU (`preact(block, x)`, by default the
    block's own `preact`); the pooled features and `head`'s logits after the last."""
    maps, pre_maps = [x], [x]
    for stage in stages:
        last: Any = stage[-1]
        pre = last.preact(stage[:-1](x)) if preact is None else preact(last, stage[:-1](x))
        x = F.relu(pre)  # not a block's in-place ReLU: `pre` is kept
        maps.append(x)
        pre_maps.append(pre)
    pooled = global_pool(x)
    return Stages(maps, pre_maps, pooled, head(pooled))


def global_pool(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C) mean over all spatial positions, whatever H and W are."""
    # Adaptive pooling stands in for the reference's fixed-size pools: identical at 32x32,
    # and it keeps larger inputs working without touching any parameter.
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def init_weights(
    model: nn.Module, linear_std: float | None = None, zero_linear_bias: bool = False
) -> None:
    """He-normal (fan_out) convs, unit/zero BN, and the family's own choice for linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            # std = sqrt(2 / (k*k*out)), which is also what the "normal_(0, sqrt(2/n))" families use
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if zero_linear_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
