"""Data sets, the decode cache, batch augmentation and the device-side loader."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icckd_cli.data import (
    DataSpec,
    DeviceLoader,
    Split,
    augment,
    load_dataset,
    per_class_subset,
    sources,
)
from icckd_cli.errors import UsageError

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tgz"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def batch(b: int = 3, c: int = 3, h: int = 5, w: int = 6) -> torch.Tensor:
    """Distinct uint8 pixel values 1..255: (B, C, H, W), zero never occurs."""
    return (torch.arange(b * c * h * w) % 255 + 1).to(torch.uint8).reshape(b, c, h, w)


def spec(flip: bool = True) -> DataSpec:
    """A 3-channel spec with identity normalisation."""
    return DataSpec("toy", 2, ["a", "b"], [0.0] * 3, [1.0] * 3, 4, flip)


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


# ----------------------------------------------------------------------------- augmentation


def test_centre_crop_without_flip_is_the_identity() -> None:
    x = batch()
    pad = torch.full((3,), 4)
    no = torch.zeros(3, dtype=torch.bool)
    assert torch.equal(augment(x, pad, pad, no, 4), x)
    assert torch.equal(augment(x, pad * 0, pad * 0, no, 0), x)


def test_flip_mirrors_the_columns() -> None:
    x = batch()
    yes = torch.tensor([True, False, True])
    for padding in (0, 2):
        centre = torch.full((3,), padding)
        out = augment(x, centre, centre, yes, padding)
        assert torch.equal(out[0], x[0].flip(-1))
        assert torch.equal(out[1], x[1])
        assert torch.equal(out[2], x[2].flip(-1))


def test_crop_is_a_shifted_window_with_zero_padding() -> None:
    x = batch(b=2, h=5, w=6)
    no = torch.zeros(2, dtype=torch.bool)
    # image 0 shifted to the top-left corner (offset 0), image 1 to the bottom-right (2 * pad)
    out = augment(x, torch.tensor([0, 4]), torch.tensor([0, 4]), no, 2)
    assert torch.equal(out[0, :, 2:, 2:], x[0, :, :-2, :-2])
    assert (out[0, :, :2, :] == 0).all() and (out[0, :, :, :2] == 0).all()
    assert torch.equal(out[1, :, :-2, :-2], x[1, :, 2:, 2:])
    assert (out[1, :, -2:, :] == 0).all() and (out[1, :, :, -2:] == 0).all()
    # a shift along one axis only
    out = augment(x, torch.tensor([1, 2]), torch.tensor([2, 3]), no, 2)
    assert torch.equal(out[0, :, 1:, :], x[0, :, :-1, :])
    assert torch.equal(out[1, :, :, :-1], x[1, :, :, 1:])


# ----------------------------------------------------------------------------- loader


def toy_split(n: int = 50) -> Split:
    """n images whose first pixel is their index, labels alternating."""
    images = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    s = Split(images, torch.arange(n) % 2)
    s.index = torch.arange(n)
    return s


def test_loader_yields_len_batches_of_labelled_images() -> None:
    split = toy_split(50)
    loader = DeviceLoader(split, spec(), 16, views=1, seed=3, padding=0)
    batches = list(loader.epoch(0))
    assert len(loader) == len(batches) == 4  # 16 + 16 + 16 + 2
    seen = torch.cat([b.index for b in batches])
    assert sorted(seen.tolist()) == list(range(50))  # a permutation of the whole split
    for b in batches:
        assert torch.equal(b.labels, split.labels[b.index])
    # a last batch of one image would break batch norm, so it is dropped
    assert len(DeviceLoader(toy_split(49), spec(), 16)) == 3


def test_loader_replays_an_epoch_and_resumes_mid_epoch() -> None:
    loader = DeviceLoader(toy_split(50), spec(), 16, views=2, seed=7, padding=2)
    first = list(loader.epoch(4))
    again = list(loader.epoch(4, start_step=2))
    assert len(again) == 2
    for a, b in zip(first[2:], again, strict=True):
        assert torch.equal(a.index, b.index)
        assert all(torch.equal(u, v) for u, v in zip(a.views, b.views, strict=True))
    other = list(loader.epoch(5))
    assert not torch.equal(first[0].index, other[0].index)


def test_two_views_are_augmented_independently() -> None:
    loader = DeviceLoader(toy_split(50), spec(), 16, views=2, seed=0, padding=4)
    b = next(iter(loader.epoch(0)))
    assert len(b.views) == 2 and b.views[0].shape == (16, 3, 4, 4)
    assert not torch.equal(b.views[0], b.views[1])


def test_loader_shards_by_rank() -> None:
    split = toy_split(50)
    shards = [DeviceLoader(split, spec(), 8, seed=1, rank=r, world=2) for r in range(2)]
    assert [len(s) for s in shards] == [3, 3]  # 25 images each: 8 + 8 + 8, and 1 dropped
    seen = [torch.cat([b.index for b in s.epoch(0)]) for s in shards]
    assert [len(x) for x in seen] == [24, 24]
    assert not set(seen[0].tolist()) & set(seen[1].tolist())  # disjoint shards


# ----------------------------------------------------------------------------- imagefolder


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 train and 2 test JPEGs per class, unpacked from the CIFAR-10 archive."""
    if not ARCHIVE.is_file():
        pytest.skip(f"{ARCHIVE} is not here")
    root = tmp_path_factory.mktemp("cifar")
    wanted = {"train": 3, "test": 2}
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(ARCHIVE, "r|gz") as tar:
        for member in tar:
            parts = Path(member.name).parts  # cifar10-jpeg/<split>/<class>/<file>
            if not member.isfile() or len(parts) != 4:
                continue
            key = (parts[1], parts[2])
            if taken.get(key, 0) < wanted[parts[1]]:
                taken[key] = taken.get(key, 0) + 1
                tar.extract(member, root, filter="data")
            if len(taken) == 20 and all(taken[k] == wanted[k[0]] for k in taken):
                break
    return root / "cifar10-jpeg"


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
