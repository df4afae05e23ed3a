"""ImageNet-size image folders, streamed: DataLoader workers read and decode each batch.

Nothing but the file list stays in memory. Training views are the standard ImageNet ones
(random resized crop, scale 0.08-1 and aspect 3/4-4/3, then a horizontal flip); evaluation
resizes the short side to image_size / 0.875 and takes the centre crop. Workers send uint8
(B, V, S, S, 3) batches; the training device normalises them, as it does the in-memory sets.
Each image's crops come from a generator seeded by (seed, epoch, index), so an epoch is the
same whichever worker decodes which image, and a resumed run skips to its step exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from icckd_cli.base.errors import DataFileError
from icckd_cli.data.decode import read_rgb, unreadable, usable_cores
from icckd_cli.data.device import Batch, batch_count, epoch_order, normalize
from icckd_cli.data.loading import folder_spec
from icckd_cli.data.registry import DataSpec, Loaded, LoadRequest, register
from icckd_cli.data.sources import folder_layout

IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
EVAL_CROP = 0.875  # 224 of 256
PREFETCH = 4  # batches each worker prepares ahead


@dataclass
class StreamSplit:
    """A split that stays on disk: file paths, labels (N,), indices (N,) and output size."""

    files: np.ndarray  # (N,) bytes: no per-file Python objects for forked workers to copy
    labels: Tensor
    image_size: int
    workers: int | None = None
    index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> StreamSplit:
        """The same split, delivering its batches to `device`."""
        return replace(self, device=torch.device(device))

    def path(self, i: int) -> str:
        """The file of image `i`."""
        return self.files[i].decode()

    def num_workers(self) -> int:
        """Decoding processes: the setting, or the cores this process may use."""
        return usable_cores() if self.workers is None else self.workers

    def eval_batches(
        self, spec: DataSpec, batch_size: int, channels_last: bool = False
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Normalised centre crops (B, 3, S, S) and labels (B,), in order."""
        order = torch.arange(len(self))
        batches = [order[i : i + batch_size].tolist() for i in range(0, len(self), batch_size)]
        images = _Images(self.files, self.image_size, views=1, train=False, flip=False)
        mean, std = _stats(spec, self.device)
        for x, y, _ in _deliver(self, images, batches):
            yield normalize(x[:, 0].permute(0, 3, 1, 2), mean, std, channels_last), y


def _stats(spec: DataSpec, device: torch.device) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
    return mean, std


# ----------------------------------------------------------------------------- transforms


def random_resized_box(w: int, h: int, rng: random.Random) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a random crop: 8-100% of the area, aspect 3/4 to 4/3."""
    area = w * h
    lo, hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        aspect = math.exp(rng.uniform(lo, hi))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return x, y, x + cw, y + ch
    # ten misses (very long images): the largest centred crop of an allowed aspect
    cw, ch = w, h
    if w / h < CROP_RATIO[0]:
        ch = round(w / CROP_RATIO[0])
    elif w / h > CROP_RATIO[1]:
        cw = round(h * CROP_RATIO[1])
    x, y = (w - cw) // 2, (h - ch) // 2
    return x, y, x + cw, y + ch


def centre_box(w: int, h: int, size: int) -> tuple[float, float, float, float]:
    """The centre crop that resizing the short side to size/0.875 and cropping size keeps."""
    side = min(w, h) * EVAL_CROP  # size pixels of a short side of size / 0.875
    x, y = (w - side) / 2, (h - side) / 2
    return x, y, x + side, y + side


class _Images(TorchDataset):
    """Image i -> (uint8 (V, S, S, 3) views, readable?, i); runs in the DataLoader workers."""

    def __init__(
        self,
        files: np.ndarray,
        size: int,
        *,
        views: int,
        train: bool,
        flip: bool,
        seed: int = 0,
        epoch: int = 0,
    ) -> None:
        self.files, self.size, self.views, self.train = files, size, views, train
        self.flip, self.seed, self.epoch = flip, seed, epoch

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, bool, int]:
        try:
            out = self._read(i)
        except Exception:  # noqa: BLE001 - any decoder failure: the main process names the file
            return torch.zeros(self.views, self.size, self.size, 3, dtype=torch.uint8), False, i
        return torch.from_numpy(out), True, i

    def _read(self, i: int) -> np.ndarray:
        s = self.size
        rng = random.Random(f"{self.seed}/{self.epoch}/{i}")
        with Image.open(self.files[i].decode()) as raw:
            w, h = raw.size
            if self.train:
                boxes = [random_resized_box(w, h, rng) for _ in range(self.views)]
            else:
                boxes = [centre_box(w, h, s)]
            # a JPEG decodes at 1/2, 1/4 or 1/8 scale when the crops stay over S pixels there
            shrink = min(min(b[2] - b[0], b[3] - b[1]) for b in boxes) / s
            if shrink >= 2:
                raw.draft(raw.mode, (math.ceil(w / shrink), math.ceil(h / shrink)))
            im = raw.convert("RGB")  # greyscale, palette, CMYK, RGBA: 3 channels
        fx, fy = im.size[0] / w, im.size[1] / h
        out = np.empty((self.views, s, s, 3), dtype=np.uint8)
        for v, (x0, y0, x1, y1) in enumerate(boxes):
            box = (x0 * fx, y0 * fy, x1 * fx, y1 * fy)
            crop = np.asarray(im.resize((s, s), Image.Resampling.BILINEAR, box=box))
            if self.flip and rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[v] = crop
        return out


def _deliver(
    split: StreamSplit, images: _Images, batches: list[list[int]]
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """(uint8 (B, V, S, S, 3), labels (B,), indices (B,)) on the split's device, in order."""
    cuda = split.device.type == "cuda"
    workers = split.num_workers()
    loader = DataLoader(
        images,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=cuda,  # page-locked host batches: the copies below overlap compute
        prefetch_factor=PREFETCH if workers else None,
    )
    for x, ok, idx in loader:
        if not bool(ok.all()):
            _raise_unreadable(split, int(idx[~ok][0]))
        x = x.to(split.device, non_blocking=cuda)
        y = split.labels[idx].to(split.device, non_blocking=cuda)
        yield x, y, idx.to(split.device, non_blocking=cuda)


def _raise_unreadable(split: StreamSplit, i: int) -> None:
    """Read the failing file again here, for the decoder's own words, and stop."""
    path = split.path(i)
    try:
        read_rgb(path, None)
        why: BaseException = OSError("the decoder failed on it in a worker")
    except Exception as exc:  # noqa: BLE001 - whatever PIL raises names the problem
        why = exc
    raise DataFileError(unreadable(path, why).message)


class StreamLoader:
    """DeviceLoader's interface for a streamed split: shuffled, augmented batches per epoch.

    The order and the shards under torchrun are DeviceLoader's (seeded by seed and epoch);
    workers decode in parallel and hand over uint8 batches, normalised on the device.
    """

    def __init__(
        self,
        split: StreamSplit,
        spec: DataSpec,
        batch_size: int,
        *,
        views: int = 1,
        seed: int = 0,
        channels_last: bool = False,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.split, self.spec, self.batch_size = split, spec, batch_size
        self.views, self.seed, self.channels_last = views, seed, channels_last
        self.rank, self.world = rank, world
        self.mean, self.std = _stats(spec, split.device)

    def __len__(self) -> int:
        return batch_count(len(self.split), self.world, self.batch_size)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """The batches of one epoch, skipping the first `start_step` (for resuming)."""
        _, perm = epoch_order(len(self.split), self.seed, epoch, self.rank, self.world)
        b = self.batch_size
        batches = [perm[s * b : (s + 1) * b].tolist() for s in range(start_step, len(self))]
        images = _Images(
            self.split.files,
            self.split.image_size,
            views=self.views,
            train=True,
            flip=self.spec.flip,
            seed=self.seed,
            epoch=epoch,
        )
        for step, (x, y, idx) in enumerate(_deliver(self.split, images, batches), start_step):
            views = [
                normalize(x[:, v].permute(0, 3, 1, 2), self.mean, self.std, self.channels_last)
                for v in range(self.views)
            ]
            yield Batch(views, y, idx, step)


@register("imagenet")
def _imagenet(req: LoadRequest) -> Loaded:
    """Any ILSVRC-style folder (train/<class>/*, val/<class>/*), streamed from disk.

    Held-out validation images (opts.holdout) come out of train/ and are read as the test
    split is: resized and centre-cropped, never augmented.
    """
    opts = req.opts
    root, classes, train_files, test_files, val_files = folder_layout(req, "imagenet")

    def stream(per_class: dict[str, list[Path]]) -> StreamSplit:
        files = [str(f).encode() for c in classes for f in per_class.get(c, [])]
        labels = [i for i, c in enumerate(classes) for _ in per_class.get(c, [])]
        labelled = torch.tensor(labels, dtype=torch.long)
        return StreamSplit(np.array(files), labelled, opts.image_size, opts.workers)

    spec = folder_spec("imagenet", classes, IMAGENET_STATS, opts.image_size, root)
    val = None if val_files is None else stream(val_files)
    return spec, stream(train_files), stream(test_files), val


def is_streamed(split: Any) -> bool:
    """Whether a split is read from disk batch by batch."""
    return isinstance(split, StreamSplit)
