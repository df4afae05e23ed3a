"""`torchvision:<builder>`: any classification builder of torchvision.models, its own keys.

The head is the final nn.Linear that gives the logits (ResNet `fc`, EfficientNet/MobileNet/
VGG `classifier[-1]`, ConvNeXt `classifier.2` after its LayerNorm and Flatten, ViT
`heads.head`, Swin `head`, ...) together with the dropout layers right before it in the same
Sequential; the embedding is everything before that, (B, D). The network runs its own
forward with the head passed through, so features and logits are exactly torchvision's.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from torch import Tensor, nn

from icckd_cli.base.errors import UsageError
from icckd_cli.base.torchvision_check import check_torchvision
from icckd_cli.models.base import Stages
from icckd_cli.models.library import (
    Family,
    LibraryModel,
    call_builder,
    final_linear,
    meta_build,
    size_arg_of,
    unknown_name,
)

PREFIX = "torchvision"
HINT = "Run 'icckd models --family torchvision' to list them."
PASS = "_icckd_pass_through"  # set on a head module while the features are computed


@lru_cache(maxsize=1)
def names() -> list[str]:
    """Every classification builder of torchvision.models (not detection, video, ...)."""
    check_torchvision()
    from torchvision import models

    return sorted(models.list_models(module=models))


def check_name(name: str) -> str:
    """`name` if it is a classification builder; a one-line error otherwise."""
    for candidate in (name, name.lower()):  # torchvision's builders are lower case
        if candidate in names():
            return candidate
    check_torchvision()
    from torchvision import models

    if name in models.list_models():  # a builder of torchvision.models.detection, video, ...
        raise UsageError(
            f"torchvision:{name} is not an image classifier (it has no classification head); "
            "icckd needs a classification builder: run 'icckd models --family torchvision'"
        )
    raise unknown_name(PREFIX, name, names(), HINT)


def _pass_through(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
    """Forward hook: while features are asked for, the final Linear returns its input."""
    return inputs[0] if module.__dict__.get(PASS, False) else None


def head_modules(net: nn.Module, arch: str, num_classes: int) -> list[nn.Module]:
    """The final Linear and the dropouts right before it: the part that makes the logits."""
    found = final_linear(net, num_classes)
    if found is None:
        raise UsageError(
            f"{arch} has no linear classification head with {num_classes} outputs (e.g. "
            "SqueezeNet's is a convolution); icckd needs pooled features and a linear head: "
            "choose another model"
        )
    path, linear = found
    parent_path, _, own = path.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    head: list[nn.Module] = [linear]
    if isinstance(parent, nn.Sequential):
        siblings = list(parent._modules.items())
        i = [k for k, _ in siblings].index(own)
        while i > 0 and isinstance(siblings[i - 1][1], nn.Dropout):
            i -= 1
            head.insert(0, siblings[i][1])
    return head


class TorchvisionModel(LibraryModel):
    """A torchvision classifier: everything before its final Linear as features, that as head."""

    head_modules: list[nn.Module]  # outside the module tables: the net holds them already

    def __init__(self, name: str, net: nn.Module, num_classes: int, args: dict[str, Any]):
        arch = f"{PREFIX}:{name}"
        head = head_modules(net, arch, num_classes)
        linear = head[-1]
        assert isinstance(linear, nn.Linear)
        super().__init__(arch, net, num_classes, linear.in_features, args)
        self.__dict__["head_modules"] = head
        linear.register_forward_hook(_pass_through)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, D): torchvision's forward with the head passed through."""
        *dropouts, linear = self.head_modules
        modes = [m.training for m in dropouts]
        for m in dropouts:  # identity, and no random numbers drawn: forward_head applies them
            m.training = False
        linear.__dict__[PASS] = True
        try:
            out = self.net(x)
        finally:
            linear.__dict__[PASS] = False
            for m, mode in zip(dropouts, modes, strict=True):
                m.training = mode
        # GoogLeNet and Inception return (logits, aux...) in training: the main output
        return out[0] if isinstance(out, tuple) else out

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, D) -> (B, num_classes): the dropouts before the final Linear, then it."""
        for m in self.head_modules:
            feats = m(feats)
        return feats

    def forward_stages(self, x: Tensor) -> Stages:
        """The last layer at each resolution (of `features` where the network has one, else
        of its top-level modules), read through torchvision.models.feature_extraction; the
        pooled features are the head's input, so the head runs as in forward."""
        extractor = self.__dict__.get("_stages")
        if extractor is None:  # traced once, on this batch's shapes; shares the parameters
            extractor = _stage_extractor(self.net, self.head_modules[0], x)
            self.__dict__["_stages"] = extractor
        out = extractor(x)
        pooled = out.pop("pooled").flatten(1)
        maps = list(out.values())
        return Stages(maps, list(maps), pooled, self.forward_head(pooled))

    def patch_grid(self, image_size: int) -> tuple[int, int] | None:
        """torchvision's ViTs: image_size // patch_size patches a side; None for others."""
        patch = getattr(self.net, "patch_size", None)
        return (image_size // patch, image_size // patch) if isinstance(patch, int) else None

    def fixed_input_size(self) -> int | None:
        """torchvision's ViTs accept only the image_size they were built for."""
        size = getattr(self.net, "image_size", None)
        return size if isinstance(size, int) else None


def _stage_extractor(net: nn.Module, head: nn.Module, x: Tensor) -> nn.Module:
    """A feature extractor returning each resolution's last map and the head's input."""
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    features = getattr(net, "features", None)
    root, prefix = (features, "features.") if isinstance(features, nn.Sequential) else (net, "")
    sizes: dict[str, tuple[int, ...]] = {}

    def keep(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor) and output.dim() == 4:
                sizes[name] = tuple(output.shape[2:])

        return hook

    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)  # the head's pool is no stage
    children = [(n, m) for n, m in root.named_children() if not isinstance(m, pools)]
    handles = [m.register_forward_hook(keep(prefix + n)) for n, m in children]
    try:  # one image in eval mode: shapes only, no BN statistics updated
        mode = net.training
        with torch.no_grad():
            net.eval()(x[:1])
        net.train(mode)
    finally:
        for h in handles:
            h.remove()
    names = list(sizes)
    # the last module at each resolution
    stages = [
        n for i, n in enumerate(names) if i + 1 == len(names) or sizes[names[i + 1]] != sizes[n]
    ]
    head_path = next(n for n, m in net.named_modules() if m is head)
    graph = create_feature_extractor(net, {head_path: "head"}).graph
    node = next(n for n in graph.nodes if n.op == "call_module" and n.target == head_path)
    if not stages:
        raise UsageError(
            f"torchvision:{type(net).__name__} has no module with 4-D outputs, so it has no "
            "stages to read: choose a convolutional network"
        )
    before = node.args[0]  # a module's output is named by its path, a function's by its node
    pooled = before.target if before.op == "call_module" else before.name
    return create_feature_extractor(net, {**{n: n for n in stages}, pooled: "pooled"})


def _builder(name: str, num_classes: int | None, args: dict[str, Any]) -> Any:
    check_torchvision()
    from torchvision import models

    kw = {"num_classes": num_classes} if num_classes is not None else {}
    return lambda: models.get_model(name, weights=None, **kw, **args)


def build(name: str, num_classes: int, args: dict[str, Any]) -> TorchvisionModel:
    """torchvision.models.get_model(name, weights=None, num_classes=..., **args), adapted."""
    name = check_name(name)
    net = call_builder(f"{PREFIX}:{name}", _builder(name, num_classes, args), args)
    return TorchvisionModel(name, net, num_classes, args)


def probe(name: str, num_classes: int | None = None, args: dict[str, Any] | None = None) -> Any:
    """The network's structure, on the meta device where it builds there (RegNet does not)."""
    make = _builder(check_name(name), num_classes, args or {})
    try:
        return meta_build(make)
    except (RuntimeError, NotImplementedError):  # an init that reads values: build for real
        return call_builder(f"{PREFIX}:{name}", make, args or {})


@lru_cache(maxsize=256)
def size_arg(name: str) -> str | None:
    """'image_size' for torchvision's ViTs (their builders take it), else None."""
    return size_arg_of(type(probe(name)))


def input_size(name: str, args: dict[str, Any]) -> int:
    """The image side: the image_size given, else the crop of the builder's first weights."""
    if "image_size" in args:
        return int(args["image_size"])
    check_torchvision()
    from torchvision import models

    try:
        weights = list(models.get_model_weights(check_name(name)))
        return int(weights[0].transforms().crop_size[0])
    except (ValueError, IndexError, AttributeError, TypeError):
        return 224


FAMILY = Family(PREFIX, names, check_name, build, size_arg, input_size)
