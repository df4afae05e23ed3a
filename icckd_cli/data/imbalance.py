"""Applying --imbalance-factor to a loaded data set's training split (longtail.py's rule).

It runs after the loader built the validation split and --train-per-class, on in-memory and
streamed splits alike; F = 1 returns the data set untouched (no copy, no random draw). The
kept images are renumbered 0..K-1 (the index a memory bank or the teacher store keys on).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from icckd_cli.data.longtail import check_imbalance_factor, class_counts, longtail_positions
from icckd_cli.data.registry import Dataset, Progress, Split


def apply_imbalance(data: Dataset, factor: float, progress: Progress | None = None) -> list[int]:
    """Make data.train long-tailed in place; the per-class training counts (C,) it keeps.

    With F > 1 a 'train_split' event reports them: factor, largest, smallest, total, counts.
    """
    factor = check_imbalance_factor(factor)
    num_classes = data.spec.num_classes
    if factor != 1:
        train: Any = data.train
        keep = longtail_positions(train.labels, num_classes, factor)
        if isinstance(train, Split):
            keep = keep.to(train.labels.device)
            data.train = Split(train.images[keep], train.labels[keep], torch.arange(len(keep)))
        else:  # a StreamSplit: file names and labels
            data.train = replace(
                train, files=train.files[keep.numpy()], labels=train.labels[keep],
                index=torch.arange(len(keep)),
            )  # fmt: skip
    counts = class_counts(data.train.labels, num_classes)
    if factor != 1 and progress is not None:
        info = {"factor": factor, "largest": max(counts), "smallest": min(counts)}
        progress("train_split", {**info, "total": sum(counts), "counts": counts})
    return counts


def imbalance_meta(factor: float, data: Dataset) -> dict[str, Any]:
    """What a checkpoint's dataset metadata adds for a long-tailed run: factor and counts.

    {} for a balanced run (F = 1), so its metadata stays as before.
    """
    if factor == 1:
        return {}
    counts = class_counts(data.train.labels, data.spec.num_classes)
    return {"imbalance_factor": float(factor), "train_counts": counts}


def dataset_meta(data: Dataset, imbalance_factor: float) -> dict[str, Any]:
    """A checkpoint's `dataset` metadata: the spec, and for a long-tailed run its counts."""
    return {**data.spec.to_dict(), **imbalance_meta(imbalance_factor, data)}
