"""Data sets decoded once into uint8 tensors, cached on disk, kept on the device; or streamed.

`registry` holds the types, the registry and the decode cache; `sources`, `tinyimagenet`
and `stream` register the data sets (importing them is what fills the registry); `device`
augments and batches the in-memory ones, `stream` reads ImageNet-size folders batch by batch.
"""

from __future__ import annotations

from typing import Any

from icckd_cli.base.errors import UsageError
from icckd_cli.data import sources, tinyimagenet  # noqa: F401  (imported for their registrations)
from icckd_cli.data.device import Batch, DeviceLoader, augment, eval_batches, normalize
from icckd_cli.data.holdout import Holdout
from icckd_cli.data.registry import (
    CACHE_VERSION,
    Dataset,
    DataSpec,
    Loaded,
    Loader,
    LoadOptions,
    LoadRequest,
    Split,
    cache_dir,
    channel_stats,
    list_datasets,
    load_dataset,
    per_class_subset,
    register,
)
from icckd_cli.data.sources import CIFAR_STATS, IMAGE_SUFFIXES
from icckd_cli.data.stream import IMAGENET_STATS, StreamLoader, StreamSplit, is_streamed


def make_loader(
    split: Any,
    spec: DataSpec,
    batch_size: int,
    *,
    views: int = 1,
    seed: int = 0,
    padding: int = 4,
    channels_last: bool = False,
    rank: int = 0,
    world: int = 1,
    unlabeled_ratio: float | None = None,
) -> DeviceLoader | StreamLoader:
    """The training loader of a split: on the device, or streamed from disk."""
    if is_streamed(split):
        if unlabeled_ratio is not None:
            raise UsageError("--unlabeled-ratio needs a data set held in memory; drop it")
        return StreamLoader(
            split,
            spec,
            batch_size,
            views=views,
            seed=seed,
            channels_last=channels_last,
            rank=rank,
            world=world,
        )
    return DeviceLoader(
        split,
        spec,
        batch_size,
        views=views,
        seed=seed,
        padding=padding,
        channels_last=channels_last,
        rank=rank,
        world=world,
        unlabeled_ratio=unlabeled_ratio,
    )


__all__ = [
    "CACHE_VERSION",
    "CIFAR_STATS",
    "IMAGENET_STATS",
    "IMAGE_SUFFIXES",
    "Batch",
    "DataSpec",
    "Dataset",
    "DeviceLoader",
    "Holdout",
    "LoadOptions",
    "LoadRequest",
    "Loaded",
    "Loader",
    "Split",
    "StreamLoader",
    "StreamSplit",
    "augment",
    "cache_dir",
    "channel_stats",
    "eval_batches",
    "is_streamed",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "normalize",
    "per_class_subset",
    "register",
]
