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
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from icckd_cli.base.atomic import atomic_write
from icckd_cli.base.errors import UsageError, suggest
from icckd_cli.base.events import Callback
from icckd_cli.data.holdout import Holdout, split_class

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
    """A data set: its spec and splits (on the CPU until moved; streamed ones stay on disk)."""

    spec: DataSpec
    train: Any  # Split, or a StreamSplit (data/stream.py) for the streamed sets
    test: Any
    val: Any = None  # images held out of the training split (--val-per-class/--val-fraction)


Progress = Callback  # base/events.py: the one progress type


@dataclass
class LoadOptions:
    """Settings some data sets read: streamed image size and workers, the memory limit."""

    image_size: int = 224
    workers: int | None = None  # None: the cores this process may use
    memory_limit_gb: float = 16.0
    progress: Progress = field(default=lambda event, info: None)
    holdout: Holdout | None = None  # the validation split; None: no validation split


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class LoadRequest:
    """What load_dataset asks of a loader: the folder, downloads, per-class subsets, options."""

    data_dir: Path | None
    download: bool
    train_per_class: int | None
    test_per_class: int | None
    opts: LoadOptions


# (spec, train, test, val); val is None unless the request's options.holdout asks for it
Loaded = tuple[DataSpec, Any, Any, Any]
Loader = Callable[[LoadRequest], Loaded]
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
    """Load a registered data set, optionally keeping the first N images of each class.

    With `options.holdout` the validation images leave the training split first (see
    split_class); --train-per-class then keeps the first N of the rest.
    """
    if name not in _REGISTRY:
        raise UsageError(
            f"unknown data set '{name}'.{suggest(name, _REGISTRY)} "
            f"Choose one of: {', '.join(_REGISTRY)}."
        )
    opts = options or LoadOptions()
    request = LoadRequest(data_dir, download, train_per_class, test_per_class, opts)
    loaded = _REGISTRY[name](request)
    spec, train, test, val = loaded
    if opts.holdout is not None and val is None:  # a loader that ignored it would train on it
        raise UsageError(f"data set '{name}' cannot hold out a validation split; drop --val-*")
    if flip is not None:
        spec.flip = flip
    for split in (train, test, val):
        if split is not None:
            split.index = torch.arange(len(split))
    return Dataset(spec, train, test, val)


def per_class_subset(split: Split, limit: int | None) -> Split:
    """The first `limit` images of every class, in their original order."""
    return hold_out(split, [], None, limit)[0]


def hold_out(
    split: Split, classes: list[str], holdout: Holdout | None, limit: int | None
) -> tuple[Split, Split | None]:
    """(training, validation or None) images of an in-memory split, each in original order."""
    if holdout is None and limit is None:
        return split, None
    keep = torch.zeros(len(split), dtype=torch.bool)
    held = torch.zeros(len(split), dtype=torch.bool)
    for c in split.labels.unique().tolist():
        where = (split.labels == c).nonzero().flatten()
        name = classes[c] if c < len(classes) else str(c)
        train_pos, val_pos = split_class(len(where), c, name, holdout, limit)
        keep[where[train_pos]] = True
        held[where[val_pos]] = True
    train = Split(split.images[keep], split.labels[keep])
    return train, (Split(split.images[held], split.labels[held]) if holdout else None)


# A channel whose std is under one grey level is (nearly) constant: dividing by it would
# blow its few deviations (or any test image's) up to huge inputs, and a std of 0 gives NaN
# at the first step. Such a channel is left unscaled (std 1), and a warning says so.
MIN_STD = 1 / 255
CHANNELS = ("red", "green", "blue")


def channel_stats(images: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, 3, H, W), on the 0..1 scale."""
    x = images.double() / 255.0
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()


def floor_std(std: list[float], name: str, progress: Progress) -> list[float]:
    """std with every (nearly) constant channel set to 1, each reported as a 'warning' event."""
    out = []
    for c, s in enumerate(std):
        if not s >= MIN_STD:  # NaN too (a single image of one pixel)
            progress(
                "warning",
                {
                    "message": f"the {CHANNELS[c] if c < 3 else c} channel of the {name} "
                    f"training images is constant (std {s:.2g}, under one grey level); it is "
                    "left unscaled (std 1) instead of dividing by ~0"
                },
            )
            s = 1.0
        out.append(s)
    return out


Splits = dict[str, Split]


def _cached(key: dict, build: Callable[[], tuple[dict, Splits]]) -> tuple[dict, Splits]:
    """Decode once: later calls with the same key read the named splits back from disk."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / f"{key['name']}-{digest}.safetensors"
    if path.is_file():
        try:
            t = load_file(str(path))

            with safe_open(str(path), "pt") as fh:
                info = json.loads(fh.metadata()["info"])
            names = [k[:-2] for k in t if k.endswith("_x")]
            return info, {n: Split(t[f"{n}_x"], t[f"{n}_y"]) for n in names}
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            pass
    info, splits = build()
    tensors = {}
    for n, split in splits.items():
        tensors[f"{n}_x"] = split.images.contiguous()
        tensors[f"{n}_y"] = split.labels.contiguous()
    try:
        # a private temporary name, then a rename: a concurrent reader never sees half a file
        meta = {"info": json.dumps(info)}
        atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))
    except Exception:  # noqa: BLE001 - no writable cache: still works, decodes again next time
        pass
    return info, splits
