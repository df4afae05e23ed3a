"""Batch augmentation and the device-side loader (icckd_cli.data.device)."""

from __future__ import annotations

import torch

from icckd_cli.data import DataSpec, DeviceLoader, Split, augment


def batch(b: int = 3, c: int = 3, h: int = 5, w: int = 6) -> torch.Tensor:
    """Distinct uint8 pixel values 1..255: (B, C, H, W), zero never occurs."""
    return (torch.arange(b * c * h * w) % 255 + 1).to(torch.uint8).reshape(b, c, h, w)


def spec(flip: bool = True) -> DataSpec:
    """A 3-channel spec with identity normalisation."""
    return DataSpec("toy", 2, ["a", "b"], [0.0] * 3, [1.0] * 3, 4, flip)


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
