"""Name -> constructor table for the zoo; each family module registers its own names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from icckd_cli.errors import UsageError, suggest
from icckd_cli.models.base import ZooModel


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


def resolve_name(name: str) -> str:
    """The registered spelling of `name` (exact, else case-insensitive); UsageError if none."""
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


def feature_dim(name: str) -> int:
    """Size of the pooled penultimate features of `name`, without building the model."""
    return _SPECS[resolve_name(name)].feature_dim


def input_size(name: str) -> int:
    """The image side `name` is designed for (32 for the CIFAR zoo, 224 for ImageNet nets)."""
    return _SPECS[resolve_name(name)].input_size


def create_model(name: str, num_classes: int = 100) -> ZooModel:
    """A freshly initialised `name` network with a `num_classes`-way head."""
    spec = _SPECS[resolve_name(name)]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}.")
    return spec.build(num_classes=num_classes)
