"""The device side: whole-batch augmentation and normalisation, the training loader.

Augmentation (random crop with zero padding, horizontal flip, normalisation) runs on
whole batches on the training device: no per-image PIL work inside the training loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from icckd_cli.base.errors import UsageError
from icckd_cli.data.registry import DataSpec, Split
from icckd_cli.data.unlabeled import ratio_order, ratio_plan


def normalize(images: Tensor, mean: Tensor, std: Tensor, channels_last: bool = False) -> Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, H, W), standardised per channel."""
    x = images.float().div_(255.0).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def augment(images: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, padding: int) -> Tensor:
    """Random crop with zero padding and optional flip, for a whole uint8 batch.

    images (B, C, H, W); dy, dx (B,) offsets in [0, 2*padding]; flip (B,) bool.
    """
    b, c, h, w = images.shape
    if padding:
        padded = F.pad(images, (padding, padding, padding, padding))
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        # flipping = reading the crop's columns backwards
        cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
        chan = torch.arange(c, device=images.device)[None, :, None, None]
        batch = torch.arange(b, device=images.device)[:, None, None, None]
        return padded[batch, chan, rows, cols]
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def epoch_order(
    n: int, seed: int, epoch: int, rank: int = 0, world: int = 1
) -> tuple[torch.Generator, Tensor]:
    """(the epoch's generator, this rank's shard of its permutation (n // world,)).

    One permutation per (seed, epoch), cut into `world` equal shards: under torchrun the
    ranks see disjoint parts that together cover all but the n % world left over.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = n // world
    return g, perm[rank * per_rank : (rank + 1) * per_rank]


def batch_count(n: int, world: int, batch_size: int) -> int:
    """Batches per epoch on each rank; a last batch of 1 breaks batch norm, so it is dropped."""
    full, rest = divmod(n // world, batch_size)
    return full + (1 if rest > 1 else 0)


@dataclass
class Batch:
    """One training batch: `views` float tensors (B, 3, H, W), labels (B,), indices (B,)."""

    views: list[Tensor]
    labels: Tensor
    index: Tensor
    step: int = -1  # its place in the epoch (the teacher-output store reads by it)
    # mixup (data/mixup.py): every view is lam * x + (1 - lam) * x[perm]; None: unmixed
    mix: tuple[float, Tensor] | None = None


class DeviceLoader:
    """Shuffled, augmented batches of a split that already lives on the device.

    Randomness comes from one generator per epoch seeded by (seed, epoch), so any epoch can
    be replayed exactly after a restart. With `world` > 1 each rank takes its own shard.
    """

    def __init__(
        self,
        split: Split,
        spec: DataSpec,
        batch_size: int,
        *,
        views: int = 1,
        seed: int = 0,
        padding: int = 4,
        channels_last: bool = False,
        rank: int = 0,
        world: int = 1,
        unlabeled_ratio: float | None = None,
    ) -> None:
        if unlabeled_ratio is not None and world > 1:
            raise UsageError("--unlabeled-ratio runs in one process; drop it under torchrun")
        self.ratio = unlabeled_ratio  # None: plain shuffling of every image
        self.split, self.spec, self.batch_size = split, spec, batch_size
        self.views, self.seed, self.padding = views, seed, padding
        self.channels_last, self.rank, self.world = channels_last, rank, world
        dev = split.images.device
        self.mean = torch.tensor(spec.mean, device=dev).view(1, -1, 1, 1)
        self.std = torch.tensor(spec.std, device=dev).view(1, -1, 1, 1)

    def __len__(self) -> int:
        if self.ratio is not None:
            return ratio_plan(self.split.labels, self.ratio, self.batch_size)[2]
        return batch_count(len(self.split), self.world, self.batch_size)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """The batches of one epoch, skipping the first `start_step` (for resuming)."""
        dev = self.split.images.device
        n = len(self.split)
        if self.ratio is None:
            g, perm = epoch_order(n, self.seed, epoch, self.rank, self.world)
            size = self.batch_size
        else:  # each batch its share of labelled and unlabelled images
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            rows = ratio_order(self.split.labels, self.ratio, self.batch_size, g)
            perm, size = rows.flatten(), rows.shape[1]
        perm = perm.to(dev)
        hi = 2 * self.padding + 1
        offsets = torch.randint(0, hi, (self.views, 2, n), generator=g).to(dev)
        flips = (torch.rand(self.views, n, generator=g) < 0.5).to(dev) & self.spec.flip
        for step in range(start_step, len(self)):
            idx = perm[step * size : (step + 1) * size]
            raw = self.split.images[idx]
            views = []
            for v in range(self.views):
                x = augment(
                    raw, offsets[v, 0, idx], offsets[v, 1, idx], flips[v, idx], self.padding
                )
                views.append(normalize(x, self.mean, self.std, self.channels_last))
            yield Batch(views, self.split.labels[idx], self.split.index[idx], step)


def eval_batches(
    split: Split, spec: DataSpec, batch_size: int, channels_last: bool = False
) -> Iterator[tuple[Tensor, Tensor]]:
    """Normalised, unaugmented (x, y) batches of a split, in order (streamed ones too)."""
    if not isinstance(split, Split):  # a StreamSplit reads, decodes and crops its files
        yield from split.eval_batches(spec, batch_size, channels_last)
        return
    dev = split.images.device
    mean = torch.tensor(spec.mean, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=dev).view(1, -1, 1, 1)
    for i in range(0, len(split), batch_size):
        x = normalize(split.images[i : i + batch_size], mean, std, channels_last)
        yield x, split.labels[i : i + batch_size]
