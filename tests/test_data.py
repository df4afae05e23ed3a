"""Loading data sets: the registry, the decode cache, digits and image folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icckd_cli.base.errors import UsageError
from icckd_cli.data import Split, load_dataset, per_class_subset, sources
from tests.imagesets import cifar_like

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ----------------------------------------------------------------------------- digits


def test_digits_split_sizes_and_stratification() -> None:
    ds = load_dataset("digits")
    assert (len(ds.train), len(ds.test)) == (1437, 360)
    assert ds.train.images.shape[1:] == (3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.spec.num_classes == 10 and ds.spec.flip is False  # a mirrored 2 is no 2
    train = torch.bincount(ds.train.labels, minlength=10)
    test = torch.bincount(ds.test.labels, minlength=10)
    # every class keeps its share of the test split, to within one image
    assert ((test - 0.2 * (train + test)).abs() <= 1).all(), (train, test)
    assert torch.equal(ds.train.index, torch.arange(1437))


def test_per_class_subset_keeps_the_first_images_in_order() -> None:
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    split = Split(torch.arange(7).view(7, 1, 1, 1).to(torch.uint8), labels)
    kept = per_class_subset(split, 2)
    assert kept.images.flatten().tolist() == [0, 1, 2, 3, 4, 6]
    assert kept.labels.tolist() == [0, 1, 0, 2, 1, 2]
    ds = load_dataset("digits", train_per_class=30, test_per_class=10)
    assert torch.bincount(ds.train.labels).tolist() == [30] * 10
    assert torch.bincount(ds.test.labels).tolist() == [10] * 10


def test_digits_cache_is_read_back_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICCKD_CACHE_DIR", str(tmp_path))
    first = load_dataset("digits")
    (cached,) = tmp_path.glob("digits-*.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]  # no temporary left over

    def no_decoding() -> None:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr("sklearn.datasets.load_digits", no_decoding)
    second = load_dataset("digits")
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)
    # a damaged cache file is decoded again, never fatal
    monkeypatch.undo()
    monkeypatch.setenv("ICCKD_CACHE_DIR", str(tmp_path))
    cached.write_bytes(b"garbage")
    third = load_dataset("digits")
    assert torch.equal(first.train.images, third.train.images)


def test_unknown_data_set() -> None:
    with pytest.raises(UsageError, match=r"unknown data set 'digit'\. Did you mean: digits\?"):
        load_dataset("digit")


# ----------------------------------------------------------------------------- imagefolder


def test_images_of_another_size_are_resized_with_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icckd_cli.data import LoadOptions

    monkeypatch.setenv("ICCKD_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "set"
    sizes = {"train": [(8, 8), (8, 8), (12, 10), (8, 8)], "test": [(8, 8), (5, 8)]}
    for split, shapes in sizes.items():
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i, (w, h) in enumerate(shapes):
                grey = 40 * i + (100 if c == "b" else 0)
                Image.new("RGB", (w, h), (grey, grey, grey)).save(root / split / c / f"{i}.png")
    events: list[tuple[str, dict]] = []
    opts = LoadOptions(progress=lambda e, i: events.append((e, i)))
    ds = load_dataset("imagefolder", root, options=opts)
    assert ds.train.images.shape == (8, 3, 8, 8)  # the first training image's size
    assert [i["message"] for e, i in events if e == "warning"] == [
        "2 of the 8 training images are not 8x8 pixels; they were resized (stretched, "
        "bilinear) to 8x8",
        "2 of the 4 test images are not 8x8 pixels; they were resized (stretched, bilinear) to 8x8",
    ]


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 train and 2 test 32x32 JPEGs per CIFAR-10 class, in the archive's layout."""
    return cifar_like(tmp_path_factory.mktemp("cifar"), CIFAR10, 3, 2)


def test_imagefolder_reads_cifar_jpegs(
    cifar_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICCKD_CACHE_DIR", str(tmp_path))
    ds = load_dataset("imagefolder", cifar_folder)
    assert ds.spec.classes == CIFAR10 and ds.spec.num_classes == 10
    assert (len(ds.train), len(ds.test)) == (30, 20)
    assert ds.spec.image_size == 32 and ds.spec.flip is True
    assert ds.spec.data_dir == str(cifar_folder.resolve())
    assert torch.bincount(ds.train.labels).tolist() == [3] * 10
    first = sorted((cifar_folder / "train" / "airplane").iterdir())[0]
    pixels = torch.from_numpy(np.array(Image.open(first).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(ds.train.images[0], pixels)
    # the mean and std come from the training images
    mean = (ds.train.images.double() / 255).mean(dim=(0, 2, 3))
    torch.testing.assert_close(torch.tensor(ds.spec.mean, dtype=torch.float64), mean)

    small = load_dataset("imagefolder", cifar_folder, train_per_class=2, test_per_class=1)
    assert (len(small.train), len(small.test)) == (20, 10)
    assert torch.equal(small.train.images[:2], ds.train.images[:2])

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(sources, "_decode", no_decoding)
    again = load_dataset("imagefolder", cifar_folder)
    assert torch.equal(again.train.images, ds.train.images)
    # a changed file is noticed: the cache key holds every file's size and time
    os.utime(first, ns=(0, 0))
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset("imagefolder", cifar_folder)
