"""What a run is made from: its data on the device, its resolved config, its batches.

train-teacher, distill and experiment build these the same way (runs.py re-exports them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from icckd_cli.base.errors import UsageError
from icckd_cli.data import (
    Dataset,
    DeviceLoader,
    Holdout,
    LoadOptions,
    StreamLoader,
    load_dataset,
    make_loader,
)
from icckd_cli.data.imbalance import apply_imbalance
from icckd_cli.models import resolve_name
from icckd_cli.training import distributed as dist
from icckd_cli.training.engine import Callback


def load_data(
    cfg: Any, device: torch.device, progress: Callback | None = None, test: bool = True
) -> Dataset:
    """The configured data set with its splits moved to the device (streamed ones: bound).

    test=False: the test split is dropped unread (data.test is None), for runs that must
    choose on the validation split alone (icckd tune's trials).
    """
    options = LoadOptions(
        image_size=cfg.image_size,
        workers=cfg.workers,
        memory_limit_gb=cfg.memory_limit_gb,
        holdout=Holdout.of(cfg),
    )
    if progress is not None and dist.is_main():
        options.progress = progress
    data = load_dataset(
        cfg.dataset,
        cfg.data_dir,
        download=cfg.download,
        flip=cfg.flip,
        train_per_class=cfg.train_per_class,
        test_per_class=cfg.test_per_class,
        options=options,
    )
    apply_imbalance(data, cfg.imbalance_factor, options.progress)  # F = 1: untouched
    if not test and data.val is None:
        raise UsageError("a run that never reads its test split needs a validation split")
    data.train, data.test = data.train.to(device), data.test.to(device) if test else None
    if data.val is not None:
        data.val = data.val.to(device)
    return data


def resolved_config(cfg: Any) -> dict[str, Any]:
    """The config as JSON-ready values, with the recipe's derived values filled in."""
    out = cfg.model_dump(mode="json")
    out["arch"] = resolve_name(cfg.arch)  # the registered spelling: the recipe's lr keys on it
    out["lr"] = cfg.resolved_lr(out["arch"], dist.world_size())
    out["lr_decay_epochs"] = cfg.resolved_decay()
    out["warmup_epochs"] = cfg.resolved_warmup(out["arch"])
    out["recipe"] = cfg.recipe(out["arch"]).recipe.name  # recorded only (config.RECORDED_ONLY)
    out["data_seed"] = cfg.resolved_data_seed()
    for key in ("data_dir", "teacher", "init", "teacher_cache"):  # --resume from any folder
        if out.get(key) is not None:
            out[key] = str(Path(out[key]).resolve())
    return out


def train_loader(
    cfg: Any, data: Dataset, views: int, channels_last: bool
) -> DeviceLoader | StreamLoader:
    """The run's augmentation stream: order, crops and flips from the data seed."""
    loader = make_loader(
        data.train,
        data.spec,
        cfg.batch_size,
        views=views,
        seed=cfg.resolved_data_seed(),
        padding=cfg.crop_padding,
        channels_last=channels_last,
        rank=dist.rank(),
        world=dist.world_size(),
    )
    if len(loader) == 0:
        raise UsageError(
            f"--batch-size {cfg.batch_size} leaves no batch of 2 or more images from "
            f"{len(data.train)} training images; lower --batch-size"
        )
    return loader


def validation_info(cfg: Any, data: Dataset) -> dict[str, Any]:
    """The validation split of a run: its setting and size, as checkpoints record it."""
    return {
        "val_per_class": cfg.val_per_class,
        "val_fraction": cfg.val_fraction,
        "images": len(data.val),
        "train_images": len(data.train),
    }
