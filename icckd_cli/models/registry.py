"""Name -> constructor table for the zoo; each family module registers its own names."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from icckd_cli.base.errors import UsageError, suggest
from icckd_cli.models.base import ZooModel

if TYPE_CHECKING:
    from icckd_cli.models.library import Family

# models named by a library, `timm:<name>` and `torchvision:<builder>`: one adapter each
FAMILIES = ("timm", "torchvision")


@dataclass(frozen=True)
class ModelSpec:
    """One registered architecture: name, pooled-feature size, constructor, input size."""

    name: str
    feature_dim: int
    build: Callable[..., ZooModel]
    input_size: int = 32  # the image side it is designed for (32: CIFAR, 224: ImageNet)


_SPECS: dict[str, ModelSpec] = {}

# How `icckd models` lists the zoo (the order the KD papers' tables use); names registered
# later but missing here follow in registration order.
_LISTING_ORDER = (
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4",
    "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
    "ResNet50", "MobileNetV2", "ShuffleV1", "ShuffleV2",
    "tv_resnet18", "tv_resnet34", "tv_resnet50", "tv_mobilenet_v2", "MobileNetV1",
)  # fmt: skip


def register(
    name: str, feature_dim: int, build: Callable[..., ZooModel], input_size: int = 32
) -> None:
    """Add an architecture; `build(num_classes=...)` must return a ZooModel."""
    # names resolve case-insensitively, so two that differ only in case would be ambiguous
    clash = [known for known in _SPECS if known.lower() == name.lower()]
    if clash:
        raise ValueError(f"architecture {name!r} is registered twice (as {clash[0]!r})")
    _SPECS[name] = ModelSpec(name, feature_dim, build, input_size)


def list_models() -> list[str]:
    """Every registered architecture name, in the zoo's listing order."""
    rank = {name: i for i, name in enumerate(_LISTING_ORDER)}
    return sorted(_SPECS, key=lambda name: rank.get(name, len(rank)))


def family(prefix: str) -> Family:
    """The adapter of a model library (imported when first named)."""
    if prefix == "timm":
        from icckd_cli.models.timm_adapter import FAMILY
    else:
        from icckd_cli.models.torchvision_adapter import FAMILY
    return FAMILY


def uses_torchvision(name: str) -> bool:
    """Whether building `name` imports torchvision: torchvision:<builder> and the zoo's tv_ nets."""
    prefix, sep, rest = name.partition(":")
    return (bool(sep) and prefix.lower() == "torchvision") or name.lower().startswith("tv_")


def split_name(name: str) -> tuple[str | None, str]:
    """('timm', 'vit_tiny_patch16_224') for a library's name, (None, name) for the zoo's."""
    prefix, sep, rest = name.partition(":")
    if not sep:
        return None, name
    if prefix.lower() not in FAMILIES:
        raise UsageError(
            f"unknown model library '{prefix}' in '{name}'; name timm:<model>, "
            "torchvision:<builder> or an architecture of the zoo ('icckd models')"
        )
    return prefix.lower(), rest


def resolve_name(name: str) -> str:
    """The registered spelling of `name` (exact, else case-insensitive); UsageError if none."""
    prefix, rest = split_name(name)
    if prefix is not None:
        checked = family(prefix).resolve(rest)
        return f"{prefix}:{checked}"
    if name in _SPECS:
        return name
    folded = {known.lower(): known for known in _SPECS}
    if name.lower() in folded:
        return folded[name.lower()]
    raise UsageError(
        f"unknown architecture '{name}'."
        + suggest(name, list_models())
        + " Run 'icckd models' to list them."
    )


def model_args_for(name: str, given: dict[str, Any], image_size: int | None) -> dict[str, Any]:
    """The builder arguments to use: those given, plus the data set's image size where the
    builder takes one (timm's `img_size`, torchvision's ViT `image_size`) and none was given."""
    prefix, rest = split_name(name)
    if prefix is None:
        if given:
            raise UsageError(
                f"{resolve_name(name)} takes no --model-arg (got "
                f"{', '.join(f'{k}={v!r}' for k, v in given.items())}); builder arguments are "
                "for timm:<model> and torchvision:<builder> architectures: drop them"
            )
        return {}
    fam = family(prefix)
    out = dict(given)
    size = fam.size_arg(fam.resolve(rest))
    if size is not None and size not in out and image_size is not None:
        out[size] = int(image_size)
    return out


def probe_model(name: str, num_classes: int = 100, **model_args: Any) -> ZooModel:
    """`name` built on the meta device (the structure alone: no memory, no initialisation),
    or for real where an initialiser reads values (torchvision's RegNets)."""
    try:
        with torch.device("meta"):
            return create_model(name, num_classes, **model_args)
    except (RuntimeError, NotImplementedError):
        return create_model(name, num_classes, **model_args)


def feature_dim(name: str, **model_args: Any) -> int:
    """Size of the pooled penultimate features of `name`, without a training step."""
    if split_name(name)[0] is None:
        return _SPECS[resolve_name(name)].feature_dim
    return probe_model(name, 100, **model_args).feature_dim


def input_size(name: str, **model_args: Any) -> int:
    """The image side `name` is designed for (32 for the CIFAR zoo, 224 for ImageNet nets)."""
    prefix, rest = split_name(name)
    if prefix is not None:
        fam = family(prefix)
        return fam.input_size(fam.resolve(rest), model_args)
    return _SPECS[resolve_name(name)].input_size


def create_model(name: str, num_classes: int = 100, **model_args: Any) -> ZooModel:
    """A freshly initialised `name` network with a `num_classes`-way head.

    `model_args` go to the library's builder for `timm:` and `torchvision:` names (the
    zoo's networks take none).
    """
    arch = resolve_name(name)  # an unknown name is the first error
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}.")
    prefix, rest = split_name(arch)
    if prefix is not None:
        return family(prefix).build(rest, num_classes, dict(model_args))
    model_args_for(arch, model_args, None)  # the zoo takes none: a one-line error if given
    return _SPECS[arch].build(num_classes=num_classes)


# `icckd models --family`: parameter counts come from a build on the meta device (shapes
# only, no memory, no initialisation: well under a second per model); a listing longer than
# this gives names only, since building a thousand models would take minutes
COUNT_LIMIT = 64


def describe_zoo(pattern: str | None = None) -> list[tuple[str, int, int, int]]:
    """(name, parameters at 100 classes, feature size, input size) of the zoo's models
    matching the glob `pattern` (any case), in listing order."""
    rows = []
    for name in list_models():
        if pattern is not None and not fnmatch.fnmatch(name.lower(), pattern.lower()):
            continue
        with torch.device("meta"):  # the structure alone: no memory, no initialisation
            model = create_model(name, 100)
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, params, model.feature_dim, input_size(name)))
    return rows


def describe_family(
    prefix: str, pattern: str | None = None
) -> list[tuple[str, int | None, int | None, int | None]]:
    """(name, parameters at 100 classes, feature size, input size) of a library's models
    matching the glob `pattern`; sizes are None past COUNT_LIMIT names or where a model
    cannot be built with its defaults on the meta device."""
    fam = family(prefix)
    if pattern is not None and pattern.lower().startswith(f"{prefix}:"):
        pattern = pattern[len(prefix) + 1 :]
    names = [n for n in fam.names() if pattern is None or fnmatch.fnmatch(n, pattern.lower())]
    rows: list[tuple[str, int | None, int | None, int | None]] = []
    for name in names:
        if len(names) > COUNT_LIMIT:
            rows.append((f"{prefix}:{name}", None, None, None))
            continue
        try:
            with torch.device("meta"):
                model = fam.build(name, 100, {})
            params = sum(p.numel() for p in model.parameters())
            rows.append((model.arch, params, model.feature_dim, fam.input_size(name, {})))
        except (UsageError, RuntimeError, NotImplementedError):  # no head, or not on meta
            rows.append((f"{prefix}:{name}", None, None, None))
    return rows
