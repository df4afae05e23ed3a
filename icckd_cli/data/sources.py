"""The registered data sets: embedded digits, torchvision CIFAR, image folders.

Each decodes its images once into uint8 tensors; the registry's cache keeps them on disk.
The registration order below is the order `list_datasets` and error messages show.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.base.torchvision_check import check_torchvision
from icckd_cli.data.decode import decode_files
from icckd_cli.data.holdout import split_lists
from icckd_cli.data.loading import cache_key, data_root, folder_spec, stamps
from icckd_cli.data.registry import (
    CACHE_VERSION,
    DataSpec,
    Loaded,
    Loader,
    LoadOptions,
    LoadRequest,
    Split,
    _cached,
    cache_dir,
    channel_stats,
    floor_std,
    hold_out,
    per_class_subset,
    register,
)

# ----------------------------------------------------------------------------- digits

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@register("digits")
def _digits(req: LoadRequest) -> Loaded:
    """scikit-learn's 1,797 handwritten digits, 8x8 -> 32x32, grey -> 3 channels.

    Fixed stratified split: 20% test (360 images), 80% train (1,437), random_state 0.
    """

    def build() -> tuple[dict, dict[str, Split]]:
        # scikit-learn takes seconds to import: only a miss of the decode cache pays it
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
        splits = {"train": Split(x[tr_t], y[tr_t]), "test": Split(x[te_t], y[te_t])}
        return {"classes": [str(i) for i in range(10)]}, splits

    info, splits = _cached({"name": "digits", "v": CACHE_VERSION}, build)
    opts = req.opts
    train, val = hold_out(splits["train"], info["classes"], opts.holdout, req.train_per_class)
    test = per_class_subset(splits["test"], req.test_per_class)
    mean, std = channel_stats(train.images)
    std = floor_std(std, "digits", opts.progress)
    spec = DataSpec("digits", 10, info["classes"], mean, std, 32, flip=False)
    return spec, train, test, val


# ----------------------------------------------------------------------------- CIFAR

CIFAR_STATS = {
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "cifar100": ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
}


TORCHVISION_DATASETS = ("cifar10", "cifar100")  # read through torchvision.datasets


def _cifar(name: str) -> Loader:
    def load(req: LoadRequest) -> Loaded:
        check_torchvision()
        from torchvision import datasets

        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        download = req.download
        root = Path(req.data_dir) if req.data_dir else cache_dir() / "torchvision"
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
        classes = list(sets[0].classes)
        train, val = hold_out(splits[0], classes, req.opts.holdout, req.train_per_class)
        test = per_class_subset(splits[1], req.test_per_class)
        mean, std = CIFAR_STATS[name]
        spec = DataSpec(name, len(classes), classes, mean, std, 32, True, str(root))
        return spec, train, test, val

    return load


register("cifar10")(_cifar("cifar10"))
register("cifar100")(_cifar("cifar100"))


# ----------------------------------------------------------------------------- imagefolder

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}


def _class_files(split_dir: Path, limit: int | None) -> dict[str, list[Path]]:
    """Sorted image files per class folder, the first `limit` of each."""
    out = {}
    for d in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        out[d.name] = files[:limit] if limit else files
    return out


def _decode(
    files: dict[str, list[Path]], classes: list[str], size: int, opts: LoadOptions, what: str
) -> Split:
    """Decode images with PIL into (N, 3, S, S) uint8, resizing where sizes differ."""
    paths = [f for name in classes for f in files.get(name, [])]
    labels = [label for label, name in enumerate(classes) for _ in files.get(name, [])]
    arrays = decode_files(paths, size, workers=opts.workers, progress=opts.progress, what=what)
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    return Split(x, torch.tensor(labels, dtype=torch.long))


Files = dict[str, list[Path]]


def folder_layout(
    req: LoadRequest, name: str
) -> tuple[Path, list[str], Files, Files, Files | None]:
    """(root, classes, train, test, validation files or None) of DIR/train|test|val/<class>/.

    The validation files are held out of DIR/train/ by split_class (DIR/val/ is the test
    split when DIR/test/ is absent, as in ILSVRC's layout).
    """
    root = data_root(
        req.data_dir,
        f"--dataset {name} needs --data-dir DIR holding train/ and test/ (or val/) class folders",
    )
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise UsageError(
            f"data directory {root} must hold train/ and test/ (or val/) folders with one "
            "sub-folder per class; check --data-dir"
        )
    train_files = _class_files(root / "train", None)
    test_files = _class_files(test_dir, req.test_per_class)
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
    by_class = [train_files[c] for c in classes]
    kept, held = split_lists(by_class, classes, req.opts.holdout, req.train_per_class)
    val_files = None if held is None else dict(zip(classes, held, strict=True))
    return root, classes, dict(zip(classes, kept, strict=True)), test_files, val_files


def check_memory(root: Path, count: int, size: int, limit_gb: float) -> None:
    """Stop before decoding when `count` images of size x size would pass the memory limit."""
    need = count * size * size * 3 / 1e9
    if need > limit_gb:
        raise UsageError(
            f"the {count:,} images of {root} would take {need:,.1f} GB decoded at "
            f"{size}x{size}, over --memory-limit-gb {limit_gb:g}; stream them with "
            "--dataset imagenet (or raise --memory-limit-gb)"
        )


@register("imagefolder")
def _imagefolder(req: LoadRequest) -> Loaded:
    """DIR/train/<class>/*.jpg and DIR/test/<class>/ (or val/): CIFAR JPEGs, small images."""
    opts = req.opts
    root, classes, train_files, test_files, val_files = folder_layout(req, "imagefolder")
    parts = {"train": train_files, "test": test_files}
    if val_files is not None:
        parts["val"] = val_files
    stamped = {
        split: stamps(f for fs in files.values() for f in fs) for split, files in parts.items()
    }
    key = cache_key("imagefolder", stamped["train"] + stamped["test"], stamped.get("val"))

    with Image.open(train_files[classes[0]][0]) as im:
        size = max(im.size)
    check_memory(root, sum(map(len, stamped.values())), size, opts.memory_limit_gb)

    def build() -> tuple[dict, dict[str, Split]]:
        what = {"train": "training images", "test": "test images", "val": "validation images"}
        splits = {k: _decode(fs, classes, size, opts, what[k]) for k, fs in parts.items()}
        mean, std = channel_stats(splits["train"].images)
        return {"classes": classes, "mean": mean, "std": std, "size": size}, splits

    info, splits = _cached(key, build)
    std = floor_std(info["std"], "imagefolder", opts.progress)  # also for caches made before
    spec = folder_spec("imagefolder", info["classes"], (info["mean"], std), info["size"], root)
    return spec, splits["train"], splits["test"], splits.get("val")
