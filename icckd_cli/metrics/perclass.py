"""Top-1 per class, balanced top-1, and the many/medium/few-shot groups of long-tail papers.

Accuracies are percentages, as everywhere in icckd. A class with no image among the evaluated
labels has no accuracy: None (JSON null), and it is left out of every mean. The groups follow
Liu et al., "Large-Scale Long-Tailed Recognition in an Open World", CVPR 2019: many-shot
classes have more than 100 training images, medium-shot 20 to 100, few-shot fewer than 20;
a group's top-1 is the mean of its classes' top-1 (their evaluation code averages per-class
accuracies), over the classes of the group that were evaluated; a group without any is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

MANY_ABOVE = 100  # many-shot: more than 100 training images
FEW_BELOW = 20  # few-shot: fewer than 20; medium-shot: 20 to 100
GROUPS = ("many", "medium", "few")


def _labels(x: Any) -> Tensor:
    """A 1-D int64 CPU tensor of class indices from a tensor, array or list."""
    t = torch.as_tensor(x).cpu()
    if t.ndim == 1 and t.numel() == 0:  # [] reads as float
        return t.long()
    if t.ndim != 1 or t.is_floating_point() or t.is_complex():
        raise ValueError(
            f"expected a 1-D integer array of class indices, got {t.dtype} {tuple(t.shape)}"
        )
    return t.long()


def per_class_top1(predictions: Any, labels: Any, num_classes: int) -> list[float | None]:
    """Top-1 (%) of each class 0..C-1 from predicted (N,) and true (N,) labels; None if absent."""
    pred, true = _labels(predictions), _labels(labels)
    if pred.shape != true.shape:
        raise ValueError(f"{pred.numel()} predictions for {true.numel()} labels")
    if true.numel() and (int(true.min()) < 0 or int(true.max()) >= num_classes):
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    total = torch.bincount(true, minlength=num_classes)
    right = torch.bincount(true[pred == true], minlength=num_classes)
    pairs = zip(right.tolist(), total.tolist(), strict=True)
    return [100.0 * r / n if n else None for r, n in pairs]


def balanced_top1(per_class: Sequence[float | None]) -> float | None:
    """The mean of per-class top-1 over the classes present; None when none is."""
    present = [a for a in per_class if a is not None]
    return sum(present) / len(present) if present else None


def shot_group(train_count: int) -> str:
    """'many' (> 100 training images), 'medium' (20 to 100) or 'few' (< 20)."""
    if train_count > MANY_ABOVE:
        return "many"
    if train_count < FEW_BELOW:
        return "few"
    return "medium"


def group_top1(
    per_class: Sequence[float | None], train_counts: Sequence[int]
) -> dict[str, float | None]:
    """{many, medium, few}: the mean top-1 of each group's evaluated classes, or None."""
    if len(per_class) != len(train_counts):
        raise ValueError(f"{len(per_class)} classes evaluated, {len(train_counts)} counted")
    members: dict[str, list[float]] = {g: [] for g in GROUPS}
    for acc, count in zip(per_class, train_counts, strict=True):
        if acc is not None:
            members[shot_group(int(count))].append(acc)
    return {g: (sum(a) / len(a) if a else None) for g, a in members.items()}


def per_class_report(
    predictions: Any, labels: Any, num_classes: int, train_counts: Sequence[int] | None = None
) -> dict[str, Any]:
    """The eval JSON keys: per_class_top1, balanced_top1; with train_counts, those and groups."""
    per_class = per_class_top1(predictions, labels, num_classes)
    out: dict[str, Any] = {"per_class_top1": per_class, "balanced_top1": balanced_top1(per_class)}
    if train_counts is not None:
        out["train_counts"] = [int(c) for c in train_counts]
        out["groups"] = group_top1(per_class, train_counts)
    return out
