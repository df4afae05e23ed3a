"""A checkpoint against a data set: do they agree, and how well does the model do on it.

`icckd eval` and `icckd inspect-softlabels` open checkpoints here; training checks a teacher
or an --init model with the same class check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from icckd_cli.base.errors import UsageError
from icckd_cli.commands.cost import THROUGHPUT_BATCH, Progress, measure_latency, static_cost
from icckd_cli.commands.cost import count_params as count_params  # re-exported
from icckd_cli.data import Dataset, DataSpec, Holdout, LoadOptions, load_dataset
from icckd_cli.data.imbalance import apply_imbalance
from icckd_cli.metrics.perclass import per_class_report
from icckd_cli.models import ZooModel, input_size
from icckd_cli.models.loading import load_any_model
from icckd_cli.settings.config import RunOptions
from icckd_cli.training.engine import channels_last_on, resolve_device
from icckd_cli.training.scoring import logit_metrics, split_logits

CHANNELS_LAST = RunOptions.model_fields["channels_last"].default  # a run's default layout


def check_classes(spec: DataSpec, num_classes: int, meta: dict[str, Any], source: str) -> None:
    """A checkpoint and a data set must agree on the classes and the input size."""
    if num_classes != spec.num_classes:
        raise UsageError(
            f"{source} predicts {num_classes} classes but data set '{spec.name}' has "
            f"{spec.num_classes}; use the data set it was trained on"
        )
    recorded = meta.get("dataset") or {}
    theirs = recorded.get("classes")
    # torchvision's ImageNet weights name their classes, ILSVRC folders number them by wnid:
    # both in sorted-wnid order, so the count checked above is the check
    by_wnid = recorded.get("class_order") == "wnid" and spec.name == "imagenet"
    if theirs and not by_wnid and list(theirs) != list(spec.classes):
        raise UsageError(
            f"{source} was trained on other classes ({', '.join(theirs[:4])}...) than data set "
            f"'{spec.name}' ({', '.join(spec.classes[:4])}...); use the matching data set"
        )
    size = (meta.get("dataset") or {}).get("image_size")
    if size and size != spec.image_size:
        raise UsageError(
            f"{source} was trained on {size}x{size} images but '{spec.name}' has "
            f"{spec.image_size}x{spec.image_size}; use the matching data set"
        )


def check_input_size(model: ZooModel, spec: DataSpec, option: str, source: str = "") -> None:
    """A network that takes one image size only (a ViT) must get the data set's size."""
    fixed = model.fixed_input_size()
    if fixed is None or fixed == spec.image_size:
        return
    what = f"{source} ({model.arch})" if source else model.arch
    size_arg = "img_size" if model.arch.startswith("timm:") else "image_size"
    raise UsageError(
        f"{what} takes {fixed}x{fixed} images but '{spec.name}' has "
        f"{spec.image_size}x{spec.image_size}; pass {option} {size_arg}={spec.image_size} "
        "(a weights file: only if its weights were made at that size) or use a data set of "
        f"{fixed}x{fixed} images"
    )


# a Transformer with fewer patches a side than this sees too few tokens to learn from
MIN_PATCH_GRID = 4


def patch_grid_warning(model: nn.Module, image_size: int) -> str | None:
    """A warning when a vision Transformer's patch grid on the data set's images is under 4x4."""
    if not isinstance(model, ZooModel):
        return None
    grid = model.patch_grid(image_size)
    if grid is None or min(grid) >= MIN_PATCH_GRID:
        return None
    tokens = grid[0] * grid[1]
    side = f"{image_size}x{image_size}"
    fix = (
        f"pass --model-arg patch_size={max(1, image_size // 8)} for an 8x8 grid"
        if model.arch.startswith("timm:")
        else "its builder fixes the patch size: use a timm: ViT with --model-arg patch_size="
        f"{max(1, image_size // 8)}, or larger images"
    )
    return (
        f"{model.arch} cuts the {side} images into a {grid[0]}x{grid[1]} grid of patches "
        f"({tokens} token{'s' if tokens != 1 else ''}), too few to learn from; {fix}"
    )


def open_checkpoint(
    path: Path,
    dataset: str | None,
    data_dir: Path | None,
    download: bool,
    device_name: str,
    test_per_class: int | None = None,
    train_per_class: int | None = None,
) -> tuple[ZooModel, dict[str, Any], Dataset, torch.device]:
    """A checkpoint's model and the data set recorded in it (or the one given)."""
    device = resolve_device(device_name)
    model, meta = load_any_model(path, device=device, option=None)
    recorded = meta.get("dataset") or {}
    name = dataset or recorded.get("name")
    if name is None:
        raise UsageError(f"{path} records no data set; pass --dataset (and --data-dir)")
    if data_dir is None and dataset in (None, recorded.get("name")) and recorded.get("data_dir"):
        data_dir = Path(recorded["data_dir"])
    cfg_rec = meta.get("config") or {}
    options = LoadOptions()
    if dataset is None:  # the recorded subset, so eval sees what training saw
        test_per_class = test_per_class or cfg_rec.get("test_per_class")
        train_per_class = train_per_class or cfg_rec.get("train_per_class")
        options.holdout = Holdout.of(cfg_rec)  # and the same validation images
    if recorded.get("image_size"):  # a streamed set crops at the size the model learnt
        options.image_size = int(recorded["image_size"])
    if cfg_rec.get("workers") is not None:
        options.workers = int(cfg_rec["workers"])
    data = load_dataset(
        name,
        data_dir,
        download=download,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        options=options,
    )
    if dataset is None:  # --split train of a long-tailed run: the images it trained on
        apply_imbalance(data, float(cfg_rec.get("imbalance_factor") or 1))
    check_classes(data.spec, model.num_classes, meta, str(path))
    if recorded.get("mean"):  # normalise exactly as in training
        data.spec.mean, data.spec.std = recorded["mean"], recorded["std"]
    data.train, data.test = data.train.to(device), data.test.to(device)
    if data.val is not None:
        data.val = data.val.to(device)
    if checkpoint_channels_last(meta, device):
        model = model.to(memory_format=torch.channels_last)
    assert isinstance(model, ZooModel)
    return model, meta, data, device


def checkpoint_channels_last(meta: dict[str, Any], device: torch.device) -> bool:
    """Evaluate in the layout the run trained in (channels-last unless it was turned off)."""
    # a .pth teacher records no config: the run default, as training would use (see
    # docs/performance.md: channels-last evaluates faster on the CPU)
    recorded = (meta.get("config") or {}).get("channels_last", CHANNELS_LAST)
    return channels_last_on(device, bool(recorded))


def checkpoint_image_size(meta: dict[str, Any], arch: str) -> int:
    """The image side a checkpoint was trained at (recorded), else its architecture's."""
    return int((meta.get("dataset") or {}).get("image_size") or input_size(arch))


def checkpoint_cost(
    path: Path,
    model: nn.Module,
    meta: dict[str, Any],
    device: torch.device,
    latency: bool = False,
    batch_size: int | None = None,
    reps: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """params, size_mb, macs, image_size; latency_ms, throughput, timing (None unless asked)."""
    arch = str(meta.get("arch") or getattr(model, "arch", ""))
    size = checkpoint_image_size(meta, arch)
    cost = static_cost(model, size, path)
    timing: dict[str, Any] = {"latency_ms": None, "throughput": None, "timing": None}
    if latency:
        more: dict[str, Any] = {} if reps is None else {"reps": reps}
        if progress is not None:
            more["progress"] = progress
        cl = checkpoint_channels_last(meta, device)
        timing = measure_latency(model, size, device, batch_size, channels_last=cl, **more)
    return {**cost, **timing}


def class_metrics(
    pred: torch.Tensor, true: torch.Tensor, spec: DataSpec, meta: dict[str, Any]
) -> dict[str, Any]:
    """per_class_top1, balanced_top1 (and train_counts, groups when recorded): (N,), (N,)."""
    counts = (meta.get("dataset") or {}).get("train_counts")
    if counts is not None and len(counts) != spec.num_classes:
        counts = None  # recorded for another class list (a --dataset override): no groups
    return per_class_report(pred, true, spec.num_classes, counts)


def evaluate_checkpoint(
    path: Path,
    dataset: str | None = None,
    data_dir: Path | None = None,
    download: bool = True,
    split: str = "test",
    device: str = "auto",
    batch_size: int = 512,
    latency: bool = False,
    cost_only: bool = False,
    corruptions: bool = False,
    corruptions_dir: Path | None = None,
    throughput_batch: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Metrics of a checkpoint on a split (top1, top5, nll, ece, n) and its cost.

    cost_only: the cost alone (params, size_mb, macs; with latency, latency_ms and
    throughput at throughput_batch, THROUGHPUT_BATCH when None), without loading the data
    set. progress: the 'latency' events of the timed passes.
    """
    if cost_only and (corruptions or corruptions_dir is not None):
        raise UsageError("--corruptions evaluates the test split; drop --cost-only")
    if cost_only:
        dev = resolve_device(device)
        model, meta = load_any_model(path, device=dev, option=None)
        if checkpoint_channels_last(meta, dev):
            model = model.to(memory_format=torch.channels_last)
        about = {"dataset": (meta.get("dataset") or {}).get("name"), "split": None}
        metrics: dict[str, Any] = {}
    else:
        model, meta, data, dev = open_checkpoint(path, dataset, data_dir, download, device)
        if split == "val" and data.val is None:
            raise UsageError(
                f"{path} was trained without a validation split (--val-per-class or "
                "--val-fraction), so there is none to evaluate; use --split test or train"
            )
        cl = checkpoint_channels_last(meta, dev)
        about = {"dataset": data.spec.name, "split": split}

        # one pass over the split: the summary metrics and the per-class ones share its logits
        logits, labels = split_logits(model, getattr(data, split), data.spec, batch_size, cl)
        metrics = dict(logit_metrics(logits, labels))
        metrics.update(class_metrics(logits.argmax(dim=1).cpu(), labels.cpu(), data.spec, meta))
        if corruptions or corruptions_dir is not None:
            clean = metrics["top1"] if split == "test" else None  # the pass above, reused
            # imported here: an evaluation without --corruptions needs neither it nor torchvision
            from icckd_cli.commands.robustness.scoring import corruption_metrics

            metrics["corruptions"] = corruption_metrics(
                model, data, dev, path, corruptions_dir, batch_size, cl, clean
            )
    batch = throughput_batch or THROUGHPUT_BATCH
    cost = checkpoint_cost(path, model, meta, dev, latency, batch, progress=progress)
    return {
        "checkpoint": str(path),
        "arch": model.arch,
        "kind": meta.get("kind", "pth"),
        **about,
        **metrics,
        **cost,
    }
