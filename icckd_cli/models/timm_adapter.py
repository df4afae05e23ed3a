"""`timm:<name>`: any model `timm.list_models()` knows, under timm's own state-dict keys.

The embedding is timm's pre-logit vector, `forward_head(forward_features(x), pre_logits=True)`
(pooled, normed as the model does, (B, D)); the head is `get_classifier()`, the linear layer
that turns it into logits, so `forward_head(forward_features(x))` equals timm's `model(x)`.
timm is an optional extra, imported only when a `timm:` model is named.
"""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType
from typing import Any

from torch import Tensor, nn

from icckd_cli.base.errors import UsageError
from icckd_cli.models.base import Stages
from icckd_cli.models.library import (
    Family,
    LibraryModel,
    call_builder,
    meta_build,
    size_arg_of,
    unknown_name,
)

PREFIX = "timm"
HINT = "Run 'icckd models --family timm' to list them."


def require_timm(what: str = "a timm: model") -> ModuleType:
    """The timm module, or the one-line error that says how to install it."""
    try:
        import timm
    except ImportError:
        raise UsageError(
            f"{what} needs the timm package; install it with pip install -e '.[timm]'"
        ) from None
    return timm


@lru_cache(maxsize=1)
def names() -> list[str]:
    """Every architecture timm can build (without pretrained tags)."""
    return list(require_timm().list_models())


def check_name(name: str) -> str:
    """`name` if timm knows it (a `.tag` suffix is dropped), else the error with close matches."""
    base = name.split(".", 1)[0]
    timm = require_timm(f"timm:{name}")
    for candidate in (base, base.lower()):  # timm's names are lower case
        if timm.is_model(candidate):
            return candidate
    raise unknown_name(PREFIX, name, names(), HINT)


class TimmModel(LibraryModel):
    """A timm classifier: timm's pre-logits as features, its classifier as the head."""

    head_module: nn.Module  # outside the module tables: the net holds it already

    def __init__(self, name: str, net: nn.Module, num_classes: int, args: dict[str, Any]):
        head: Any = getattr(net, "get_classifier")()  # noqa: B009 - typed as a Tensor
        arch = f"{PREFIX}:{name}"
        if getattr(net, "head_dist", None) is not None:  # DeiT's distilled variants
            raise UsageError(
                f"{arch} has two classification heads (class and distillation token); icckd "
                "needs one: use the model without 'distilled' in its name"
            )
        if not isinstance(head, nn.Linear):
            raise UsageError(
                f"{arch} has no linear classification head (its classifier is a "
                f"{type(head).__name__}); icckd needs pooled features and a linear head: "
                "choose another model"
            )
        super().__init__(arch, net, num_classes, head.in_features, args)
        self.__dict__["head_module"] = head

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, D) timm's pooled pre-logit features."""
        net: Any = self.net
        return net.forward_head(net.forward_features(x), pre_logits=True)

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, D) -> (B, num_classes) through timm's classifier."""
        return self.head_module(feats)

    def forward_stages(self, x: Tensor) -> Stages:
        """Every intermediate map of timm's `forward_intermediates` (NCHW; for a ViT, each
        block's tokens on the patch grid), with timm's pooled features and head on its final
        output; timm returns the maps after their activation, so they are their own preact."""
        net: Any = self.net
        if not hasattr(net, "forward_intermediates"):
            raise UsageError(
                f"{self.arch} has no forward_intermediates in timm {require_timm().__version__}, "
                "so its intermediate features cannot be read: choose another timm model"
            )
        final, maps = net.forward_intermediates(x)
        pooled = net.forward_head(final, pre_logits=True)
        return Stages(list(maps), list(maps), pooled, self.head_module(pooled))

    def patch_grid(self, image_size: int) -> tuple[int, int] | None:
        """The patch embedding's grid on image_size x image_size images (ViT, DeiT, ...)."""
        embed = getattr(self.net, "patch_embed", None)
        if embed is None:
            return None
        if getattr(embed, "backbone", None) is not None:  # a CNN stem first: timm's own grid
            grid = getattr(embed, "grid_size", None)
            return (int(grid[0]), int(grid[1])) if grid else None
        patch = getattr(embed, "patch_size", None)
        if patch is None:
            return None
        rows, cols = patch if isinstance(patch, (tuple, list)) else (patch, patch)
        return image_size // int(rows), image_size // int(cols)

    def fixed_input_size(self) -> int | None:
        """A ViT's patch embedding accepts one image size unless built with dynamic sizes."""
        embed = getattr(self.net, "patch_embed", None)
        size = getattr(embed, "img_size", None)
        if size is None or getattr(embed, "dynamic_img_pad", False):
            return None
        if getattr(self.net, "dynamic_img_size", False) or not getattr(embed, "strict_img_size", 1):
            return None
        return int(size[0]) if isinstance(size, (tuple, list)) else int(size)


def build(name: str, num_classes: int, args: dict[str, Any]) -> TimmModel:
    """timm.create_model(name, num_classes=..., **args) with random weights, adapted."""
    base = check_name(name)
    timm = require_timm()

    def make() -> nn.Module:
        return timm.create_model(base, pretrained=False, num_classes=num_classes, **args)

    return TimmModel(base, call_builder(f"{PREFIX}:{base}", make, args), num_classes, args)


@lru_cache(maxsize=256)
def size_arg(name: str) -> str | None:
    """'img_size' where the model's class takes it (ViTs, DeiT, Swin...), else None."""
    base = check_name(name)
    timm = require_timm()
    try:
        net = meta_build(lambda: timm.create_model(base))
    except (RuntimeError, NotImplementedError):  # an init that reads values: build for real
        net = call_builder(f"{PREFIX}:{base}", lambda: timm.create_model(base), {})
    return size_arg_of(type(net))


def input_size(name: str, args: dict[str, Any]) -> int:
    """The image side: the img_size given, else timm's pretrained config (224 for most)."""
    if "img_size" in args:
        size = args["img_size"]
        return int(size[0] if isinstance(size, (tuple, list)) else size)
    cfg = require_timm().models.get_pretrained_cfg(check_name(name))
    return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224


FAMILY = Family(PREFIX, names, check_name, build, size_arg, input_size)
