"""Long-tailed training splits against the CIFAR-LT formula, worked in exact arithmetic."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from icckd_cli.base.errors import UsageError
from icckd_cli.data import Split
from icckd_cli.data.imbalance import apply_imbalance
from icckd_cli.data.longtail import (
    check_imbalance_factor,
    class_counts,
    longtail_counts,
    longtail_lists,
    longtail_positions,
)
from icckd_cli.data.registry import Dataset, DataSpec


def exact_counts(n_max: int, num_classes: int, factor: Fraction) -> list[int]:
    """n_i = the largest k with k <= n_max * F^(-i/(C-1)), i.e. k^(C-1) * F^i <= n_max^(C-1)."""
    if num_classes == 1:
        return [n_max]
    e = num_classes - 1
    out = []
    for i in range(num_classes):
        bound = Fraction(n_max) ** e / factor**i
        k = 0
        while Fraction(k + 1) ** e <= bound:
            k += 1
        out.append(k)
    return out


def test_hand_computed_cifar_case() -> None:
    # 500 * 10^(-2i/9): 500, 299.74, 179.69, 107.72, 64.58, 38.71, 23.21, 13.91, 8.34, 5
    assert longtail_counts(500, 10, 100) == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]


def test_the_published_cifar_lt_sizes() -> None:
    # the training-set sizes of CIFAR-10-LT and CIFAR-100-LT at F = 100, 50, 10
    assert [sum(longtail_counts(5000, 10, f)) for f in (100, 50, 10)] == [12406, 13996, 20431]
    assert [sum(longtail_counts(500, 100, f)) for f in (100, 50, 10)] == [10847, 12608, 19573]


@pytest.mark.parametrize("n_max", [1, 7, 20, 64, 100, 500, 1000])
@pytest.mark.parametrize("num_classes", [2, 3, 4, 10, 13])
@pytest.mark.parametrize("factor", [Fraction(1), Fraction(3, 2), Fraction(2), Fraction(10),
                                    Fraction(100), Fraction(1000)])  # fmt: skip
def test_counts_follow_the_formula(n_max: int, num_classes: int, factor: Fraction) -> None:
    want = exact_counts(n_max, num_classes, factor)
    if want[-1] == 0:
        with pytest.raises(UsageError, match="leaves the rarest class no training image"):
            longtail_counts(n_max, num_classes, float(factor))
    else:
        assert longtail_counts(n_max, num_classes, float(factor)) == want


def test_exact_integers_are_not_floored_away() -> None:
    # 1000 * 1000^(-1/3) is 100 exactly, 1024 * 1024^(-1/5) is 256: floats land a hair off
    assert longtail_counts(1000, 4, 1000) == [1000, 100, 10, 1]
    assert longtail_counts(1024, 6, 1024) == [1024, 256, 64, 16, 4, 1]


def test_one_class_keeps_everything_and_balanced_is_flat() -> None:
    assert longtail_counts(37, 1, 100) == [37]
    assert longtail_counts(37, 5, 1) == [37] * 5
    assert longtail_counts(0, 3, 10) == [0, 0, 0]


@pytest.mark.parametrize("bad", [0.99, 0.0, -3.0, float("nan"), float("inf")])
def test_a_factor_below_one_is_a_one_line_usage_error(bad: float) -> None:
    with pytest.raises(UsageError) as info:
        longtail_counts(100, 10, bad)
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"invalid value for --imbalance-factor: {bad:g}; give a factor of at least 1 "
        "(1 is balanced; 100 is the CIFAR-LT standard)"
    )
    assert info.value.exit_code == 2
    assert check_imbalance_factor(1) == 1.0


def test_lists_keep_the_first_items_nested_across_factors() -> None:
    per_class = [[f"c{c}-{j}" for j in range(50)] for c in range(6)]
    previous = per_class
    for factor in (1, 2, 5, 10, 25, 50):
        kept = longtail_lists(per_class, factor)
        assert [len(k) for k in kept] == longtail_counts(50, 6, factor)
        for items, small, big in zip(per_class, kept, previous, strict=True):
            assert small == items[: len(small)]  # a prefix: the order --train-per-class uses
            assert small == big[: len(small)]  # nested in the split of the smaller factor
        previous = kept
    assert longtail_lists(per_class, 1) == per_class


def test_a_short_class_keeps_what_it_has() -> None:
    kept = longtail_lists([list(range(10)), list(range(3)), list(range(10))], 2)
    assert [len(k) for k in kept] == [10, 3, 5]  # n_1 = floor(10 / sqrt 2) = 7 > 3


def test_split_positions_are_per_class_prefixes_in_original_order() -> None:
    # labels interleaved: class c's j-th image sits at position 3 j + c
    labels = torch.arange(3).repeat(8)
    pos = longtail_positions(labels, 3, 4)  # counts 8, 4, 2
    assert class_counts(labels[pos], 3) == [8, 4, 2]
    want = sorted([3 * j for j in range(8)] + [3 * j + 1 for j in range(4)] + [2, 5])
    assert pos.tolist() == want


def _dataset(labels: torch.Tensor) -> Dataset:
    """A 3-class data set whose training image k is filled with the value k (its position)."""
    n = len(labels)
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(-1, 3, 2, 2)
    spec = DataSpec("toy", 3, ["a", "b", "c"], [0.5] * 3, [0.5] * 3, 2, False)
    empty = Split(torch.zeros(0, 3, 2, 2, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    return Dataset(spec, Split(images.contiguous(), labels, torch.arange(n)), empty)


def test_split_on_images_keeps_images_with_their_labels_and_is_seed_free() -> None:
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 0, 1, 2, 0, 2, 2])
    data = _dataset(labels)
    # n_max 5 (class 2): 5, floor(5/sqrt 2) = 3, 2; class 0 has only 4
    assert apply_imbalance(data, 2) == [4, 3, 2]
    out = data.train
    kept = out.images[:, 0, 0, 0].long()  # each kept image's position before the split
    assert kept.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 9]  # per class its first n_i, in order
    assert labels[kept].tolist() == out.labels.tolist()  # every image keeps its own label
    assert out.index.tolist() == list(range(9))  # renumbered 0..K-1 (store and bank key on it)
    again = _dataset(labels)
    apply_imbalance(again, 2)  # no random draw: the same images again
    assert torch.equal(again.train.images, out.images)
    balanced = _dataset(labels)
    train = balanced.train
    assert apply_imbalance(balanced, 1) == [4, 3, 5] and balanced.train is train


def test_split_validates_labels_and_factor() -> None:
    with pytest.raises(ValueError, match=r"^labels outside 0\.\.2$"):
        apply_imbalance(_dataset(torch.tensor([0, 3])), 2)
    with pytest.raises(UsageError) as refused:
        apply_imbalance(_dataset(torch.tensor([0, 1])), 0.5)
    assert str(refused.value) == (
        "invalid value for --imbalance-factor: 0.5; give a factor of at least 1 (1 is balanced; "
        "100 is the CIFAR-LT standard)"
    )
