"""Data sets decoded once into uint8 tensors, cached on disk, kept on the device.

Augmentation (random crop with zero padding, horizontal flip, normalisation) runs on
whole batches on the training device: no per-image PIL work inside the training loop.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from icckd_cli.checkpoint import atomic_write
from icckd_cli.errors import IcckdError, UsageError, suggest

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}
CACHE_VERSION = 1


@dataclass
class DataSpec:
    """What a model trained on a data set must know to be used again."""

    name: str
    num_classes: int
    classes: list[str]
    mean: list[float]
    std: list[float]
    image_size: int
    flip: bool
    data_dir: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready form, stored in checkpoints."""
        return asdict(self)


@dataclass
class Split:
    """One split as uint8 images (N, 3, H, W) and int64 labels (N,) on some device."""

    images: Tensor
    labels: Tensor
    index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> Split:
        """The same split on `device`."""
        return Split(self.images.to(device), self.labels.to(device), self.index.to(device))


@dataclass
class Dataset:
    """A data set: its spec and both splits (on the CPU until moved)."""

    spec: DataSpec
    train: Split
    test: Split


# ----------------------------------------------------------------------------- registry

Loader = Callable[[Path | None, bool, int | None, int | None], tuple[DataSpec, Split, Split]]
_REGISTRY: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Add a data set loader to the registry."""

    def wrap(fn: Loader) -> Loader:
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    """Names accepted by --dataset."""
    return list(_REGISTRY)


def cache_dir() -> Path:
    """Where decoded data sets are kept: $ICCKD_CACHE_DIR or ~/.cache/icckd."""
    root = os.environ.get("ICCKD_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "icckd"


def load_dataset(
    name: str,
    data_dir: Path | None = None,
    *,
    download: bool = True,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    flip: bool | None = None,
) -> Dataset:
    """Load a registered data set, optionally keeping the first N images of each class."""
    if name not in _REGISTRY:
        raise UsageError(
            f"unknown data set '{name}'.{suggest(name, _REGISTRY)} "
            f"Choose one of: {', '.join(_REGISTRY)}."
        )
    spec, train, test = _REGISTRY[name](data_dir, download, train_per_class, test_per_class)
    if flip is not None:
        spec.flip = flip
    train.index = torch.arange(len(train))
    test.index = torch.arange(len(test))
    return Dataset(spec, train, test)


def per_class_subset(split: Split, limit: int | None) -> Split:
    """The first `limit` images of every class, in their original order."""
    if limit is None:
        return split
    keep = torch.zeros(len(split), dtype=torch.bool)
    for c in split.labels.unique():
        where = (split.labels == c).nonzero().flatten()[:limit]
        keep[where] = True
    return Split(split.images[keep], split.labels[keep])


def channel_stats(images: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, 3, H, W), on the 0..1 scale."""
    x = images.double() / 255.0
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()


def _cached(key: dict, build: Callable[[], tuple[dict, Split, Split]]) -> tuple[dict, Split, Split]:
    """Decode once: later calls with the same key read the tensors back from disk."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / f"{key['name']}-{digest}.safetensors"
    if path.is_file():
        try:
            t = load_file(str(path))
            from safetensors import safe_open

            with safe_open(str(path), "pt") as fh:
                info = json.loads(fh.metadata()["info"])
            return info, Split(t["train_x"], t["train_y"]), Split(t["test_x"], t["test_y"])
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            pass
    info, train, test = build()
    tensors = {
        "train_x": train.images.contiguous(),
        "train_y": train.labels.contiguous(),
        "test_x": test.images.contiguous(),
        "test_y": test.labels.contiguous(),
    }
    try:
        # a private temporary name, then a rename: a concurrent reader never sees half a file
        meta = {"info": json.dumps(info)}
        atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))
    except Exception:  # noqa: BLE001 - no writable cache: still works, decodes again next time
        pass
    return info, train, test


# ----------------------------------------------------------------------------- digits

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@register("digits")
def _digits(
    data_dir: Path | None, download: bool, train_pc: int | None, test_pc: int | None
) -> tuple[DataSpec, Split, Split]:
    """scikit-learn's 1,797 handwritten digits, 8x8 -> 32x32, grey -> 3 channels.

    Fixed stratified split: 20% test (360 images), 80% train (1,437), random_state 0.
    """

    def build() -> tuple[dict, Split, Split]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] * (255.0 / 16.0)
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
        y = torch.tensor(bunch.target, dtype=torch.long)
        idx = torch.arange(len(y)).numpy()
        tr, te = train_test_split(
            idx, test_size=DIGITS_TEST_FRACTION, stratify=y.numpy(), random_state=DIGITS_SPLIT_SEED
        )
        tr_t, te_t = torch.as_tensor(sorted(tr)), torch.as_tensor(sorted(te))
        train, test = Split(x[tr_t], y[tr_t]), Split(x[te_t], y[te_t])
        return {"classes": [str(i) for i in range(10)]}, train, test

    info, train, test = _cached({"name": "digits", "v": CACHE_VERSION}, build)
    train, test = per_class_subset(train, train_pc), per_class_subset(test, test_pc)
    mean, std = channel_stats(train.images)
    spec = DataSpec("digits", 10, info["classes"], mean, std, 32, flip=False)
    return spec, train, test


# ----------------------------------------------------------------------------- CIFAR

CIFAR_STATS = {
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "cifar100": ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
}


def _cifar(name: str) -> Loader:
    def load(
        data_dir: Path | None, download: bool, train_pc: int | None, test_pc: int | None
    ) -> tuple[DataSpec, Split, Split]:
        from torchvision import datasets

        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        root = Path(data_dir) if data_dir else cache_dir() / "torchvision"
        folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        try:
            sets = [cls(str(root), train=t, download=download) for t in (True, False)]
        except Exception as exc:  # noqa: BLE001 - network or archive trouble
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            why = (
                "--no-download forbids fetching it"
                if not download
                else f"downloading it failed ({lines[0]})"
            )
            raise IcckdError(
                f"{name} is not in {root} and {why}; put its python version "
                f"('{folder}/') in a folder and pass that with --data-dir, or use "
                "--dataset imagefolder --data-dir DIR with train/ and test/ class folders"
            ) from None
        splits = []
        for s in sets:
            x = torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous()
            splits.append(Split(x, torch.tensor(s.targets, dtype=torch.long)))
        train = per_class_subset(splits[0], train_pc)
        test = per_class_subset(splits[1], test_pc)
        mean, std = CIFAR_STATS[name]
        classes = list(sets[0].classes)
        spec = DataSpec(name, len(classes), classes, mean, std, 32, True, str(root))
        return spec, train, test

    return load


register("cifar10")(_cifar("cifar10"))
register("cifar100")(_cifar("cifar100"))


# ----------------------------------------------------------------------------- imagefolder


def _class_files(split_dir: Path, limit: int | None) -> dict[str, list[Path]]:
    """Sorted image files per class folder, the first `limit` of each."""
    out = {}
    for d in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        out[d.name] = files[:limit] if limit else files
    return out


def _decode(files: dict[str, list[Path]], classes: list[str], size: int | None) -> Split:
    """Decode images with PIL into (N, 3, S, S) uint8, resizing where sizes differ."""
    import numpy as np
    from PIL import Image

    arrays, labels = [], []
    for label, name in enumerate(classes):
        for f in files.get(name, []):
            try:
                with Image.open(f) as raw:
                    im = raw.convert("RGB")
                    if size is not None and im.size != (size, size):
                        im = im.resize((size, size), Image.Resampling.BILINEAR)
                    arrays.append(np.asarray(im, dtype=np.uint8))
            except OSError as exc:
                raise IcckdError(f"cannot read image {f} ({exc}); remove or replace it") from None
            labels.append(label)
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return Split(x, torch.tensor(labels, dtype=torch.long))


@register("imagefolder")
def _imagefolder(
    data_dir: Path | None, download: bool, train_pc: int | None, test_pc: int | None
) -> tuple[DataSpec, Split, Split]:
    """DIR/train/<class>/*.jpg and DIR/test/<class>/ (or val/): CIFAR JPEGs, Tiny-ImageNet."""
    if data_dir is None:
        raise UsageError(
            "--dataset imagefolder needs --data-dir DIR holding train/ and test/ (or val/) "
            "class folders"
        )
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"data directory {root} does not exist; check --data-dir")
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise UsageError(
            f"data directory {root} must hold train/ and test/ (or val/) folders with one "
            "sub-folder per class; check --data-dir"
        )
    train_files = _class_files(root / "train", train_pc)
    test_files = _class_files(test_dir, test_pc)
    classes = [c for c, fs in train_files.items() if fs]
    if len(classes) < 2:
        raise UsageError(
            f"{root / 'train'} holds {len(classes)} class folder(s) with images; it needs at "
            "least 2 (train/<class>/<image>.jpg)"
        )
    extra = sorted(c for c, fs in test_files.items() if fs and c not in classes)
    if extra:
        raise UsageError(
            f"{test_dir} has class folders that train/ lacks ({', '.join(extra[:5])}); "
            "both splits must use the same class names"
        )
    if not any(test_files.values()):
        raise UsageError(f"{test_dir} holds no images; put <class>/<image> files there")
    stamp = [
        (str(f), f.stat().st_size, f.stat().st_mtime_ns)
        for fs in (*train_files.values(), *test_files.values())
        for f in fs
    ]
    key = {
        "name": "imagefolder",
        "v": CACHE_VERSION,
        "files": hashlib.sha256(json.dumps(stamp).encode()).hexdigest(),
    }

    def build() -> tuple[dict, Split, Split]:
        from PIL import Image

        with Image.open(train_files[classes[0]][0]) as im:
            size = max(im.size)
        train = _decode(train_files, classes, size)
        test = _decode(test_files, classes, size)
        mean, std = channel_stats(train.images)
        return {"classes": classes, "mean": mean, "std": std, "size": size}, train, test

    info, train, test = _cached(key, build)
    spec = DataSpec(
        "imagefolder",
        len(classes),
        info["classes"],
        info["mean"],
        info["std"],
        info["size"],
        True,
        str(root.resolve()),
    )
    return spec, train, test


# ----------------------------------------------------------------------------- device side


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


@dataclass
class Batch:
    """One training batch: `views` float tensors (B, 3, H, W), labels (B,), indices (B,)."""

    views: list[Tensor]
    labels: Tensor
    index: Tensor


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
    ) -> None:
        self.split, self.spec, self.batch_size = split, spec, batch_size
        self.views, self.seed, self.padding = views, seed, padding
        self.channels_last, self.rank, self.world = channels_last, rank, world
        dev = split.images.device
        self.mean = torch.tensor(spec.mean, device=dev).view(1, -1, 1, 1)
        self.std = torch.tensor(spec.std, device=dev).view(1, -1, 1, 1)

    def __len__(self) -> int:
        n = len(self.split) // self.world
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest > 1 else 0)  # a batch of 1 breaks batch norm: dropped

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """The batches of one epoch, skipping the first `start_step` (for resuming)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        dev = self.split.images.device
        n = len(self.split)
        perm = torch.randperm(n, generator=g)
        per_rank = n // self.world
        perm = perm[self.rank * per_rank : (self.rank + 1) * per_rank].to(dev)
        hi = 2 * self.padding + 1
        offsets = torch.randint(0, hi, (self.views, 2, n), generator=g).to(dev)
        flips = (torch.rand(self.views, n, generator=g) < 0.5).to(dev) & self.spec.flip
        for step in range(start_step, len(self)):
            idx = perm[step * self.batch_size : (step + 1) * self.batch_size]
            raw = self.split.images[idx]
            views = []
            for v in range(self.views):
                x = augment(
                    raw, offsets[v, 0, idx], offsets[v, 1, idx], flips[v, idx], self.padding
                )
                views.append(normalize(x, self.mean, self.std, self.channels_last))
            yield Batch(views, self.split.labels[idx], self.split.index[idx])


def eval_batches(
    split: Split, spec: DataSpec, batch_size: int, channels_last: bool = False
) -> Iterator[tuple[Tensor, Tensor]]:
    """Normalised, unaugmented (x, y) batches of a split, in order."""
    dev = split.images.device
    mean = torch.tensor(spec.mean, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=dev).view(1, -1, 1, 1)
    for i in range(0, len(split), batch_size):
        x = normalize(split.images[i : i + batch_size], mean, std, channels_last)
        yield x, split.labels[i : i + batch_size]
