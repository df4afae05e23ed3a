"""The validation split: which images a fixed rule holds out of each class, on every data set.

The streamed `imagenet` folders are in test_data_stream.py; training on the split (best on
validation) is in test_engine.py and test_cli.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from icckd_cli.base.errors import UsageError
from icckd_cli.data import Holdout, LoadOptions, Split, load_dataset
from icckd_cli.data.holdout import split_class
from icckd_cli.data.registry import MIN_STD, hold_out
from tests.imagesets import tiny_imagenet


def _digits(train_pc: int | None = None, **holdout: Any) -> Any:
    return load_dataset(
        "digits", train_per_class=train_pc, options=LoadOptions(holdout=Holdout(**holdout))
    )


def _rows(images: torch.Tensor) -> set[bytes]:
    """Each image (N, 3, H, W) as bytes: digits has no two identical images per class here."""
    return {row.tobytes() for row in images.flatten(1).numpy()}


def test_split_class_is_fixed_disjoint_and_nested() -> None:
    train, val = split_class(10, 3, "3", Holdout(per_class=3), None)
    assert len(val) == 3 and sorted(train + val) == list(range(10))
    # the rule's own seed and the class number alone: the same positions every call
    assert split_class(10, 3, "3", Holdout(per_class=3), None) == (train, val)
    assert split_class(10, 4, "4", Holdout(per_class=3), None)[1] != val  # spread over classes
    # --train-per-class keeps the first N of what is left, never a held-out image
    assert split_class(10, 3, "3", Holdout(per_class=3), 4) == (train[:4], val)
    # more held out: the earlier ones stay held out (the first k of one fixed shuffle)
    assert set(val) < set(split_class(10, 3, "3", Holdout(per_class=5), None)[1])
    # a fraction rounds up, as scikit-learn's test_size does: ceil(0.25 * 10) = 3
    assert split_class(10, 3, "3", Holdout(fraction=0.25), None)[1] == val
    assert split_class(10, 3, "3", Holdout(fraction=0.3), None)[1] == val  # 0.3 * 10 is 3
    assert split_class(10, 3, "3", None, 4) == ([0, 1, 2, 3], [])


def test_hold_out_keeps_the_original_order() -> None:
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    split = Split(torch.arange(8).view(8, 1, 1, 1).to(torch.uint8), labels)
    train, val = hold_out(split, ["a", "b"], Holdout(per_class=1), None)
    assert val is not None and val.labels.tolist() == [0, 1]
    kept, held = train.images.flatten().tolist(), val.images.flatten().tolist()
    assert sorted(kept + held) == list(range(8)) and kept == sorted(kept)
    assert [int(labels[i]) for i in kept] == train.labels.tolist()
    _, val0 = split_class(4, 0, "a", Holdout(per_class=1), None)
    assert held[0] == [0, 2, 4, 6][val0[0]]  # class 0's images are positions 0, 2, 4, 6


def test_digits_validation_is_disjoint_and_the_same_whatever_train_per_class() -> None:
    full = load_dataset("digits")
    ds = _digits(per_class=5)
    assert torch.bincount(ds.val.labels).tolist() == [5] * 10
    assert len(ds.train) + len(ds.val) == len(full.train) == 1437
    assert _rows(ds.train.images).isdisjoint(_rows(ds.val.images))
    assert torch.equal(ds.val.index, torch.arange(50))
    for train_pc in (3, 20):
        small = _digits(train_pc, per_class=5)
        assert torch.equal(small.val.images, ds.val.images)  # fixed, whatever the subset
        assert torch.equal(small.val.labels, ds.val.labels)
        assert torch.bincount(small.train.labels).tolist() == [train_pc] * 10
        assert _rows(small.train.images).isdisjoint(_rows(ds.val.images))
    # the normalisation comes from the training images alone
    mean = (ds.train.images.double() / 255).mean(dim=(0, 2, 3))
    torch.testing.assert_close(torch.tensor(ds.spec.mean, dtype=torch.float64), mean)
    fraction = _digits(fraction=0.1)
    counts = torch.bincount(full.train.labels)
    assert torch.bincount(fraction.val.labels).tolist() == [
        -(-int(c) // 10) for c in counts
    ]  # ceil(0.1 * n) per class


def test_a_class_left_without_training_images_is_refused() -> None:
    counts = torch.bincount(load_dataset("digits").train.labels).tolist()
    k, n = max(counts), counts[0]  # class '0' is the first that k leaves without images
    with pytest.raises(UsageError) as err:
        _digits(per_class=k)
    assert err.value.message == (
        f"--val-per-class {k} holds out {k} of the {n} training images of class '0' and "
        "leaves it none to train on; lower --val-per-class"
    )
    with pytest.raises(UsageError, match=rf"^--val-fraction 0\.999 holds out {n} of the {n} "):
        _digits(fraction=0.999)
    left = _digits(per_class=min(counts) - 1).train.labels  # one left is enough
    assert torch.bincount(left).tolist() == [c - min(counts) + 1 for c in counts]


def numbered_folder(root: Path, classes: int, train: int, test: int = 1) -> Path:
    """train/ and test/ of 8x8 PNGs whose red value is the file's number, green its class."""
    for split, count in (("train", train), ("test", test)):
        for c in range(classes):
            for k in range(count):
                path = root / split / f"c{c}" / f"{k:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (10 * k, 50 * c, 9)).save(path)
    return root


def _numbers(split: Split) -> list[tuple[int, int]]:
    """(class, file number) of each image of a numbered_folder split, in order."""
    return [(int(x[1, 0, 0]) // 50, int(x[0, 0, 0]) // 10) for x in split.images]


def test_imagefolder_and_tinyimagenet_hold_out_files(tmp_path: Path) -> None:
    folder = numbered_folder(tmp_path / "folder", classes=3, train=6)
    opts = LoadOptions(holdout=Holdout(per_class=2))
    ds = load_dataset("imagefolder", folder, options=opts)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (12, 6, 3)
    held = {c: split_class(6, c, f"c{c}", Holdout(per_class=2), None)[1] for c in range(3)}
    assert _numbers(ds.val) == [(c, k) for c in range(3) for k in held[c]]
    assert _numbers(ds.train) == [(c, k) for c in range(3) for k in range(6) if k not in held[c]]
    small = load_dataset("imagefolder", folder, train_per_class=1, options=opts)
    assert torch.equal(small.val.images, ds.val.images)
    assert _numbers(small.train) == [(c, min(set(range(6)) - set(held[c]))) for c in range(3)]

    tiny = tiny_imagenet(tmp_path / "tiny-imagenet-200", ["n01", "n02"], train=4, val=1)
    ti = load_dataset("tinyimagenet", tiny, options=LoadOptions(holdout=Holdout(fraction=0.5)))
    assert (len(ti.train), len(ti.val), len(ti.test)) == (4, 4, 2)
    assert ti.val.labels.tolist() == [0, 0, 1, 1] and ti.train.labels.tolist() == [0, 0, 1, 1]
    assert load_dataset("tinyimagenet", tiny).val is None


# ----------------------------------------------------------------------------- zero variance


def test_a_constant_channel_is_left_unscaled_with_a_warning(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for c in range(2):
            for k in range(3):
                path = tmp_path / split / f"c{c}" / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (40 * k + c, 100 + 20 * k, 77)).save(path)
    events: list[tuple[str, dict]] = []
    opts = LoadOptions(progress=lambda e, i: events.append((e, i)))
    ds = load_dataset("imagefolder", tmp_path, options=opts)
    assert ds.spec.std[2] == 1.0 and min(ds.spec.std[:2]) > MIN_STD
    assert [e for e in events if e[0] == "warning"] == [
        (
            "warning",
            {
                "message": "the blue channel of the imagefolder training images is constant "
                "(std 0, under one grey level); it is left unscaled (std 1) instead of "
                "dividing by ~0"
            },
        )
    ]
    x = (
        ds.train.images.float() / 255 - torch.tensor(ds.spec.mean).view(1, 3, 1, 1)
    ) / torch.tensor(ds.spec.std).view(1, 3, 1, 1)
    assert torch.isfinite(x).all() and x[:, 2].abs().max() < 1e-6
