"""What the `timm:` and `torchvision:` adapters share: a library network held as a ZooModel.

The adapter shares the library module's own tables of sub-modules, parameters and buffers
instead of holding the module under an attribute, so `state_dict()` has exactly the
library's keys (no prefix) and published weights load with strict=True. Because the
tables are the same dict objects, `.to()`, `load_state_dict` and the optimiser see one set
of tensors, whichever of the two objects they go through.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from icckd_cli.base.errors import UsageError
from icckd_cli.models.base import ZooModel

# the builder argument that sets the input side, per library (timm ViTs, torchvision vit_*)
SIZE_ARGS = ("img_size", "image_size")


class LibraryModel(ZooModel):
    """A library's classifier; `net` keeps its forward, the wrapper adds the features/head split."""

    net: nn.Module
    model_args: dict[str, Any]

    def __init__(
        self, arch: str, net: nn.Module, num_classes: int, feature_dim: int, args: dict[str, Any]
    ) -> None:
        super().__init__(arch, num_classes, feature_dim)
        # the very same tables as the library module: the state dict keeps its keys
        self._modules = net._modules
        self._parameters = net._parameters
        self._buffers = net._buffers
        self._non_persistent_buffers_set = net._non_persistent_buffers_set
        # outside the tables, so it is no sub-module (no "net." prefix, no cycle)
        self.__dict__["net"] = net
        self.model_args = dict(args)

    def train(self, mode: bool = True) -> LibraryModel:
        """Train/eval mode for the wrapper, the shared sub-modules and the library root."""
        super().train(mode)
        self.net.training = mode  # some roots read self.training in forward (Inception, DeiT)
        return self


@dataclass(frozen=True)
class Family:
    """One library's names and builders, as the registry calls them."""

    prefix: str  # "timm" or "torchvision"
    names: Callable[[], list[str]]  # every name the library can build
    resolve: Callable[[str], str]  # the library's spelling of a name; UsageError if unknown
    build: Callable[[str, int, dict[str, Any]], LibraryModel]
    size_arg: Callable[[str], str | None]  # img_size / image_size, where the builder takes one
    input_size: Callable[[str, dict[str, Any]], int]  # the side the model is designed for


def unknown_name(prefix: str, name: str, names: Iterable[str], hint: str) -> UsageError:
    """The one-line error for a name the library does not know, with close matches."""
    close = difflib.get_close_matches(name.lower(), [n.lower() for n in names], n=3, cutoff=0.6)
    also = f" Did you mean: {', '.join(f'{prefix}:{c}' for c in close)}?" if close else ""
    return UsageError(f"unknown {prefix} model '{prefix}:{name}'.{also} {hint}")


def call_builder(arch: str, build: Callable[[], nn.Module], args: dict[str, Any]) -> nn.Module:
    """Run a library builder; an argument it rejects becomes a one-line error naming it."""
    try:
        return build()
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as exc:
        if "meta tensor" in str(exc):  # an init that reads values: not the user's doing
            raise
        given = ", ".join(f"{k}={v!r}" for k, v in args.items()) or "no --model-arg"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"{arch} cannot be built with {given} ({reason}); fix or drop the --model-arg "
            "(see the library's documentation of the builder's arguments)"
        ) from None


def size_arg_of(cls: type) -> str | None:
    """The input-size argument of a model class's constructor, if it has one."""
    params = inspect.signature(cls).parameters
    return next((a for a in SIZE_ARGS if a in params), None)


def meta_build(build: Callable[[], nn.Module]) -> nn.Module:
    """Build on the meta device: the structure and shapes only, no memory, no init cost."""
    with torch.device("meta"):
        return build()


def final_linear(net: nn.Module, num_classes: int) -> tuple[str, nn.Linear] | None:
    """The last registered nn.Linear with num_classes outputs (the classifier), or None."""
    found = None
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            found = (name, module)
    return found
