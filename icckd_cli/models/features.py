"""Intermediate features of any model, as the feature-distillation methods ask for them.

"The stages" are each network's own: the zoo's families return RepDistiller's `is_feat=True`
points (the stem and every stage, with `preact=True`'s pre-activations), timm models what
timm's `forward_intermediates` returns, torchvision models the last layer at each resolution
through `torchvision.models.feature_extraction`. Named layers (`--feature-layers`) are read
from the model's own sub-modules instead. A method checks the shapes before training from a
dry forward on one small batch of the data set's image size.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from icckd_cli.base.errors import UsageError
from icckd_cli.models.base import Stages, ZooModel


@dataclass(frozen=True)
class StageShapes:
    """What a method needs to build its modules: every map's (C, H, W) and the pooled size."""

    maps: tuple[tuple[int, int, int], ...]
    pooled: int

    @property
    def preact(self) -> tuple[tuple[int, int, int], ...]:
        """The pre-activations' shapes: their maps'."""
        return self.maps

    @property
    def channels(self) -> tuple[int, ...]:
        """Each map's channel count."""
        return tuple(c for c, _, _ in self.maps)


def stages(model: ZooModel, x: Tensor, layers: Sequence[str] = ()) -> Stages:
    """(B, 3, H, W) -> the model's stages, or the outputs of the named `layers` in that order."""
    if layers:
        return named_layers(model, x, layers)
    try:
        return model.forward_stages(x)
    except NotImplementedError:
        raise UsageError(
            f"{model.arch} exposes no intermediate stages; name its layers with "
            "--feature-layers or choose a model of the zoo, timm or torchvision"
        ) from None


def named_layers(model: ZooModel, x: Tensor, layers: Sequence[str]) -> Stages:
    """The 4-D outputs of the sub-modules named `layers` during one ordinary forward."""
    known = dict(model.named_modules())
    for name in layers:
        if name not in known or not name:
            close = difflib.get_close_matches(name, list(known), n=3)
            also = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UsageError(
                f"--feature-layers names '{name}', which {model.arch} has no module of{also}; "
                "name modules as in the model's state-dict keys without the parameter name"
            )
    got: dict[str, Tensor] = {}

    def keeper(name: str) -> object:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, Tensor):
                got[name] = output

        return hook

    handles = [known[n].register_forward_hook(keeper(n)) for n in layers]  # type: ignore[arg-type]
    try:
        logits, pooled = model(x, return_features=True)
    finally:
        for h in handles:
            h.remove()
    bad = [n for n in layers if n not in got or got[n].dim() != 4]
    if bad:
        raise UsageError(
            f"--feature-layers: {', '.join(bad)} of {model.arch} gives no (B, C, H, W) feature "
            "map; name convolutional layers or stages"
        )
    maps = [got[n] for n in layers]
    return Stages(maps, list(maps), pooled, logits)


def stage_shapes(model: ZooModel, image_size: int, layers: Sequence[str] = ()) -> StageShapes:
    """The shapes `stages` gives on image_size x image_size images, from a dry forward of two
    random images in eval mode (no gradient, no BatchNorm statistics touched)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    mode = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(2, 3, image_size, image_size, device=device)
            out = stages(model, x, layers)
    finally:
        model.train(mode)
    maps = tuple((int(m.shape[1]), int(m.shape[2]), int(m.shape[3])) for m in out.maps)
    return StageShapes(maps, int(out.pooled.shape[1]))
