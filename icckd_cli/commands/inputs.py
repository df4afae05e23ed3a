"""What a run is made from: its data on the device, its resolved settings, its batches.

train-teacher, distill and experiment build these the same way. A run's settings are one
frozen object (settings/train.py: TrainTeacherConfig or DistillConfig); `resolve_run` fills in
what the recipe and the machine derive, and config.json is that object's JSON (`record`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

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
from icckd_cli.data.mixup import MixupLoader
from icckd_cli.data.unlabeled import hide_labels, join, load_unlabeled
from icckd_cli.models import resolve_name
from icckd_cli.settings.config import (
    DataOptions,
    DistillConfig,
    RunSettings,
    TrainTeacherConfig,
)
from icckd_cli.training import distributed as dist
from icckd_cli.training.engine import Callback

Run = TypeVar("Run", bound=RunSettings)


def load_data(
    cfg: DataOptions, device: torch.device, progress: Callback | None = None, test: bool = True
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
    if isinstance(cfg, DistillConfig) and cfg.hides_labels():
        hide_unlabeled(cfg, data, options)
    if not test and data.val is None:
        raise UsageError("a run that never reads its test split needs a validation split")
    data.train, data.test = data.train.to(device), data.test.to(device) if test else None
    if data.val is not None:
        data.val = data.val.to(device)
    return data


def hide_unlabeled(cfg: DistillConfig, data: Dataset, options: LoadOptions) -> None:
    """Hide the labels past --labels-per-class and add the --unlabeled-dir images (label -1)."""
    if cfg.labels_per_class is not None:
        data.train = hide_labels(data.train, cfg.labels_per_class, data.spec.classes)
    if cfg.unlabeled_dir is not None:
        extra = load_unlabeled(cfg.unlabeled_dir, data.spec.image_size, options)
        data.train = join(data.train, extra)


def resolve_run(cfg: Run) -> Run:
    """The run's settings with what the recipe and the machine derive filled in: the
    registered architecture name, lr (scaled to the processes), decay and warm-up epochs, the
    data seed, absolute paths (--resume from any folder). Resolving again changes nothing."""
    arch = resolve_name(cfg.arch)  # the registered spelling: the recipe's lr keys on it
    paths: dict[str, Path | None] = {"data_dir": cfg.data_dir}
    if isinstance(cfg, TrainTeacherConfig):
        paths["init"] = cfg.init
    elif isinstance(cfg, DistillConfig):
        paths.update(teacher=cfg.teacher, teacher_cache=cfg.teacher_cache)
        paths["unlabeled_dir"] = cfg.unlabeled_dir
    update: dict[str, Any] = {
        "arch": arch,
        "lr": cfg.resolved_lr(arch, dist.world_size()),
        "lr_decay_epochs": cfg.resolved_decay(),
        "warmup_epochs": cfg.resolved_warmup(arch),
        "data_seed": cfg.resolved_data_seed(),
        **{k: Path(v).resolve() for k, v in paths.items() if v is not None},
    }
    return cfg.model_copy(update=update)


def record(run: RunSettings) -> dict[str, Any]:
    """config.json: the resolved settings as JSON values, and the recipe's name (recorded
    only: settings.RECORDED_ONLY, dropped when the file is read back)."""
    out = run.model_dump(mode="json")
    out["recipe"] = run.recipe(run.arch).recipe.name
    return out


def resolved_config(cfg: RunSettings) -> dict[str, Any]:
    """The config.json a run of these settings writes (less the builder's default arguments)."""
    return record(resolve_run(cfg))


def train_loader(
    cfg: RunSettings, data: Dataset, views: int, channels_last: bool
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
        unlabeled_ratio=cfg.unlabeled_ratio if isinstance(cfg, DistillConfig) else None,
    )
    if isinstance(cfg, DistillConfig) and cfg.mixup > 0:  # the same mixed view for both
        loader = MixupLoader(loader, cfg.mixup, cfg.resolved_data_seed())  # type: ignore[assignment]
    if len(loader) == 0:
        raise UsageError(
            f"--batch-size {cfg.batch_size} leaves no batch of 2 or more images from "
            f"{len(data.train)} training images; lower --batch-size"
        )
    return loader


def validation_info(cfg: DataOptions, data: Dataset) -> dict[str, Any]:
    """The validation split of a run: its setting and size, as checkpoints record it."""
    return {
        "val_per_class": cfg.val_per_class,
        "val_fraction": cfg.val_fraction,
        "images": len(data.val),
        "train_images": len(data.train),
    }
