"""Data sets decoded once into uint8 tensors, cached on disk, kept on the device.

`registry` holds the types, the registry and the decode cache; `sources` registers the
data sets (importing it is what fills the registry); `device` augments and batches them.
"""

from __future__ import annotations

from icckd_cli.data import sources  # noqa: F401  (imported for its registrations)
from icckd_cli.data.device import Batch, DeviceLoader, augment, eval_batches, normalize
from icckd_cli.data.registry import (
    CACHE_VERSION,
    Dataset,
    DataSpec,
    Loader,
    Split,
    cache_dir,
    channel_stats,
    list_datasets,
    load_dataset,
    per_class_subset,
    register,
)
from icckd_cli.data.sources import CIFAR_STATS, IMAGE_SUFFIXES

__all__ = [
    "CACHE_VERSION",
    "CIFAR_STATS",
    "IMAGE_SUFFIXES",
    "Batch",
    "DataSpec",
    "Dataset",
    "DeviceLoader",
    "Loader",
    "Split",
    "augment",
    "cache_dir",
    "channel_stats",
    "eval_batches",
    "list_datasets",
    "load_dataset",
    "normalize",
    "per_class_subset",
    "register",
]
