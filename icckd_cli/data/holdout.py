"""The validation split's rule: which training images of each class are held out.

Per class, of its n training images in the data set's order: the first k of a shuffle of
0..n-1 seeded by a fixed string and the class number, never by --seed; k is N
(--val-per-class) or ceil(F * n) (--val-fraction). --train-per-class then keeps the first
M of the images left, so the held-out images are the same whatever M is.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from icckd_cli.base.errors import UsageError

VAL_SEED = "icckd-validation"  # the hold-out rule's own seed: never --seed


@dataclass(frozen=True)
class Holdout:
    """How many training images of each class are held out for validation (one of the two)."""

    per_class: int | None = None
    fraction: float | None = None

    @staticmethod
    def of(config: Any) -> Holdout | None:
        """The split a config (or a config dict recorded in a checkpoint) asks for, or None."""
        get = config.get if isinstance(config, dict) else lambda k: getattr(config, k, None)
        per_class, fraction = get("val_per_class"), get("val_fraction")
        if per_class is None and fraction is None:
            return None
        return Holdout(per_class, fraction)

    def count(self, n: int) -> int:
        """Images held out of a class of n: N, or ceil(F * n) as scikit-learn rounds."""
        if self.per_class is not None:
            return self.per_class
        return math.ceil(float(self.fraction or 0) * n - 1e-9)

    def option(self) -> str:
        """The option that set it, as typed: '--val-per-class 5'."""
        if self.per_class is not None:
            return f"--val-per-class {self.per_class}"
        return f"--val-fraction {self.fraction:g}"


def split_class(
    n: int, label: int, name: str, holdout: Holdout | None, limit: int | None
) -> tuple[list[int], list[int]]:
    """(training, validation) positions among the n images of class `label`, in order.

    Validation: the first k of a shuffle of 0..n-1 seeded by VAL_SEED and the class number
    alone, so every run and seed holds out the same images; training: the first `limit`
    (--train-per-class) of the others, so the two never overlap whatever the limit.
    """
    if holdout is None:
        return list(range(n))[:limit], []
    k = holdout.count(n)
    if k >= n:
        raise UsageError(
            f"{holdout.option()} holds out {k} of the {n} training images of class '{name}' "
            f"and leaves it none to train on; lower {holdout.option().split()[0]}"
        )
    order = list(range(n))
    random.Random(f"{VAL_SEED}/{label}").shuffle(order)
    held = set(order[:k])
    return [i for i in range(n) if i not in held][:limit], sorted(held)


def split_lists(
    per_class: list[list[Any]], names: list[str], holdout: Holdout | None, limit: int | None
) -> tuple[list[list[Any]], list[list[Any]] | None]:
    """Per-class lists (files) -> (training lists, validation lists or None) by split_class."""
    train, val = [], []
    for label, (items, name) in enumerate(zip(per_class, names, strict=True)):
        keep, held = split_class(len(items), label, name, holdout, limit)
        train.append([items[i] for i in keep])
        val.append([items[i] for i in held])
    return train, (val if holdout is not None else None)
