"""The data-set registry, the split and spec types, and the on-disk decode cache."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from icckd_cli.checkpoint import atomic_write
from icckd_cli.errors import UsageError, suggest

CACHE_VERSION = 1


@dataclass
class DataSpec:
    """What a model trained on a data set must know to be used again."""

    name: str
    num_classes: int
    classes: list[str]
    mean: list[float]
    std: list[float]
    image_size: int
    flip: bool
    data_dir: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready form, stored in checkpoints."""
        return asdict(self)


@dataclass
class Split:
    """One split as uint8 images (N, 3, H, W) and int64 labels (N,) on some device."""

    images: Tensor
    labels: Tensor
    index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        """Where the images live (and where models fed from them run)."""
        return self.images.device

    def to(self, device: torch.device) -> Split:
        """The same split on `device`."""
        return Split(self.images.to(device), self.labels.to(device), self.index.to(device))


@dataclass
class Dataset:
    """A data set: its spec and both splits (on the CPU until moved; streamed ones stay on disk)."""

    spec: DataSpec
    train: Any  # Split, or a StreamSplit (data/stream.py) for the streamed sets
    test: Any


Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class LoadOptions:
    """Settings some data sets read: streamed image size and workers, the memory limit."""

    image_size: int = 224
    workers: int | None = None  # None: the cores this process may use
    memory_limit_gb: float = 16.0
    progress: Progress = field(default=lambda event, info: None)


# ----------------------------------------------------------------------------- registry

Loader = Callable[
    [Path | None, bool, int | None, int | None, LoadOptions], tuple[DataSpec, Any, Any]
]
_REGISTRY: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Add a data set loader to the registry."""

    def wrap(fn: Loader) -> Loader:
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    """Names accepted by --dataset."""
    return list(_REGISTRY)


def cache_dir() -> Path:
    """Where decoded data sets are kept: $ICCKD_CACHE_DIR or ~/.cache/icckd."""
    root = os.environ.get("ICCKD_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "icckd"


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    *,
    download: bool = True,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    flip: bool | None = None,
    options: LoadOptions | None = None,
) -> Dataset:
    """Load a registered data set, optionally keeping the first N images of each class."""
    if name not in _REGISTRY:
        raise UsageError(
            f"unknown data set '{name}'.{suggest(name, _REGISTRY)} "
            f"Choose one of: {', '.join(_REGISTRY)}."
        )
    opts = options or LoadOptions()
    spec, train, test = _REGISTRY[name](data_dir, download, train_per_class, test_per_class, opts)
    if flip is not None:
        spec.flip = flip
    train.index = torch.arange(len(train))
    test.index = torch.arange(len(test))
    return Dataset(spec, train, test)


def per_class_subset(split: Split, limit: int | None) -> Split:
    """The first `limit` images of every class, in their original order."""
    if limit is None:
        return split
    keep = torch.zeros(len(split), dtype=torch.bool)
    for c in split.labels.unique():
        where = (split.labels == c).nonzero().flatten()[:limit]
        keep[where] = True
    return Split(split.images[keep], split.labels[keep])


def channel_stats(images: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, 3, H, W), on the 0..1 scale."""
    x = images.double() / 255.0
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()


def _cached(key: dict, build: Callable[[], tuple[dict, Split, Split]]) -> tuple[dict, Split, Split]:
    """Decode once: later calls with the same key read the tensors back from disk."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / f"{key['name']}-{digest}.safetensors"
    if path.is_file():
        try:
            t = load_file(str(path))
            from safetensors import safe_open

            with safe_open(str(path), "pt") as fh:
                info = json.loads(fh.metadata()["info"])
            return info, Split(t["train_x"], t["train_y"]), Split(t["test_x"], t["test_y"])
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            pass
    info, train, test = build()
    tensors = {
        "train_x": train.images.contiguous(),
        "train_y": train.labels.contiguous(),
        "test_x": test.images.contiguous(),
        "test_y": test.labels.contiguous(),
    }
    try:
        # a private temporary name, then a rename: a concurrent reader never sees half a file
        meta = {"info": json.dumps(info)}
        atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))
    except Exception:  # noqa: BLE001 - no writable cache: still works, decodes again next time
        pass
    return info, train, test
