"""Long-tailed training splits: class i of C keeps n_i = floor(n_max * F^(-i/(C-1))) images.

The exponential profile of CIFAR-10-LT / CIFAR-100-LT (Cao et al., "Learning Imbalanced
Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019), F = n_max / n_min the
imbalance factor (100 is their standard, 1 is balanced). Classes are ordered by label index:
class 0 keeps the most images, class C-1 the fewest. n_max is the per-class count after the
validation split and --train-per-class; which images: the first n_i of each class in the
order --train-per-class already uses, so a split is nested in every split of a smaller F and
identical across seeds (no random draw). Validation and test splits are never touched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import Tensor

from icckd_cli.base.errors import UsageError

T = TypeVar("T")

# F^(-i/(C-1)) is computed in floating point: n_max * F^(-i/(C-1)) can land a hair under an
# integer that it equals exactly (1000 * 1000^(-1/3) = 99.99999999999997); floor would then
# drop an image. A product within this relative distance of an integer counts as that integer.
INTEGER_TOLERANCE = 1e-9


def check_imbalance_factor(factor: float) -> float:
    """F itself when it is a finite number of at least 1, else a one-line UsageError."""
    if not (math.isfinite(factor) and factor >= 1):
        raise UsageError(
            f"invalid value for --imbalance-factor: {factor:g}; give a factor of at least 1 "
            "(1 is balanced; 100 is the CIFAR-LT standard)"
        )
    return float(factor)


def _floor(x: float) -> int:
    """floor(x), forgiving the rounding error of a product that is an integer exactly."""
    nearest = round(x)
    if abs(x - nearest) <= INTEGER_TOLERANCE * max(1.0, abs(x)):
        return int(nearest)
    return math.floor(x)


def longtail_counts(n_max: int, num_classes: int, factor: float) -> list[int]:
    """[n_0, ..., n_{C-1}] with n_i = floor(n_max * F^(-i/(C-1))); one class keeps n_max.

    Raises UsageError when F < 1 or when the rarest class would keep no image at all.
    """
    factor = check_imbalance_factor(factor)
    if num_classes < 1 or n_max < 0:
        raise ValueError(f"need num_classes >= 1 and n_max >= 0, got {num_classes}, {n_max}")
    if num_classes == 1:  # the exponent i/(C-1) is undefined; the only class is the largest
        return [int(n_max)]
    counts = [
        _floor(n_max * factor ** (-i / (num_classes - 1))) if i else int(n_max)
        for i in range(num_classes)
    ]
    if n_max and counts[-1] == 0:
        raise UsageError(
            f"--imbalance-factor {factor:g} leaves the rarest class no training image "
            f"({n_max} / {factor:g} < 1); lower the factor or keep more images per class"
        )
    return counts


def longtail_lists(per_class: Sequence[Sequence[T]], factor: float) -> list[list[T]]:
    """Per-class lists (files, indices), class i first: the first n_i items of each.

    n_max is the longest list; a class shorter than its n_i keeps all it has.
    """
    n_max = max((len(items) for items in per_class), default=0)
    counts = longtail_counts(n_max, max(len(per_class), 1), factor)
    return [list(items[: counts[i]]) for i, items in enumerate(per_class)]


def longtail_positions(labels: Tensor, num_classes: int, factor: float) -> Tensor:
    """Sorted positions (K,) of the images a long-tailed split keeps, from labels (N,).

    Per class, the first n_i of its images in their order in `labels`; n_max is the largest
    class. Labels outside 0..num_classes-1 are a ValueError.
    """
    labels = torch.as_tensor(labels).cpu().long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    per_class = [(labels == c).nonzero().flatten().tolist() for c in range(num_classes)]
    kept = longtail_lists(per_class, factor)
    return torch.tensor(sorted(p for positions in kept for p in positions), dtype=torch.long)


def class_counts(labels: Tensor, num_classes: int) -> list[int]:
    """Images per class (C,) of a split's labels (N,): what a checkpoint records."""
    return torch.bincount(torch.as_tensor(labels).cpu().long(), minlength=num_classes).tolist()
