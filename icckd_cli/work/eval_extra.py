"""What `eval` adds to top-1: per-class top-1, balanced top-1, the long-tail groups, and
corruption robustness (`--corruptions`, `--corruptions-dir`).

per_class_top1 and balanced_top1 come with every evaluation; train_counts and groups
{many, medium, few} with a checkpoint that records its training counts (a run trained with
--imbalance-factor). The corruptions key holds work/corruptions.py's summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from icckd_cli.data import Dataset, DataSpec
from icckd_cli.metrics.perclass import per_class_report


def class_metrics(
    pred: torch.Tensor, true: torch.Tensor, spec: DataSpec, meta: dict[str, Any]
) -> dict[str, Any]:
    """per_class_top1, balanced_top1 (and train_counts, groups when recorded): (N,), (N,)."""
    counts = (meta.get("dataset") or {}).get("train_counts")
    if counts is not None and len(counts) != spec.num_classes:
        counts = None  # recorded for another class list (a --dataset override): no groups
    return per_class_report(pred, true, spec.num_classes, counts)


def corruption_metrics(
    model: nn.Module,
    data: Dataset,
    device: torch.device,
    path: Path,
    corruptions_dir: Path | None,
    batch_size: int = 512,
    channels_last: bool = False,
    clean_top1: float | None = None,
) -> dict[str, Any]:
    """The `corruptions` key of eval's JSON: {suite, clean_top1, mean_top1, relative, results}
    (clean_top1: the test split's top-1 when already computed)."""
    # imported here: an evaluation without --corruptions needs neither it nor torchvision
    from icckd_cli.work.corruptions import corruption_robustness

    return corruption_robustness(
        model,
        data,
        device,
        corruptions_dir,
        source=str(path),
        batch_size=batch_size,
        channels_last=channels_last,
        clean_top1=clean_top1,
    )
