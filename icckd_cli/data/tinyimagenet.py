"""Tiny-ImageNet as its zip unpacks: 200 classes of 64x64 JPEGs, decoded once, in parallel.

`tiny-imagenet-200/` holds `wnids.txt` (the classes), `words.txt` (their names),
`train/<wnid>/images/*.JPEG` and `val/images/*.JPEG` labelled by `val/val_annotations.txt`;
`val` is the test split and the unlabelled `test/` is ignored. Classes are numbered in
sorted wnid order, as torchvision's ImageFolder numbers them, so teachers trained elsewhere
on `train/` keep their labels.
"""

from __future__ import annotations

from pathlib import Path

import torch

from icckd_cli.base.errors import UsageError
from icckd_cli.data.decode import decode_files
from icckd_cli.data.holdout import split_lists
from icckd_cli.data.loading import cache_key, data_root, folder_spec, stamps
from icckd_cli.data.registry import (
    Loaded,
    LoadRequest,
    Split,
    _cached,
    register,
)

TINY_SIZE = 64
# the channel statistics of Tiny-ImageNet's training set, as mdistiller normalises it
TINY_STATS = ([0.4802, 0.4481, 0.3975], [0.2302, 0.2265, 0.2262])
JPEG = {".jpeg", ".jpg"}


def _need(path: Path, what: str) -> Path:
    """A file the layout requires, or a one-line error naming it."""
    if not path.is_file():
        raise UsageError(
            f"{path} is missing: {what}; point --data-dir at tiny-imagenet-200/ exactly as "
            "its zip unpacks"
        )
    return path


def read_wnids(root: Path) -> list[str]:
    """The class ids of wnids.txt, sorted (the label order)."""
    path = _need(root / "wnids.txt", "it lists the 200 class ids")
    wnids = sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})
    if len(wnids) < 2:
        raise UsageError(f"{path} lists {len(wnids)} class id(s); it needs at least 2")
    return wnids


def read_words(root: Path, wnids: list[str]) -> list[str]:
    """The first name words.txt gives each class (its wnid where words.txt lacks it)."""
    names = {}
    path = root / "words.txt"
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, words = line.partition("\t")
            names[wnid.strip()] = words.split(",")[0].strip()
    return [names.get(w) or w for w in wnids]


def train_files(root: Path, wnids: list[str], limit: int | None) -> list[list[Path]]:
    """train/<wnid>/images/*.JPEG per class, sorted, the first `limit` of each (None: all)."""
    train = root / "train"
    if not train.is_dir():
        raise UsageError(f"{train} is missing; point --data-dir at tiny-imagenet-200/")
    known = set(wnids)
    stray = sorted(d.name for d in train.iterdir() if d.is_dir() and d.name not in known)
    if stray:
        raise UsageError(
            f"{train / stray[0]} is a class folder whose wnid is absent from "
            f"{root / 'wnids.txt'}; add it there or remove the folder"
        )
    out = []
    for w in wnids:
        folder = train / w / "images"
        files = sorted(f for f in folder.glob("*") if f.suffix.lower() in JPEG)
        out.append(files[:limit] if limit else files)
    if not any(out):
        raise UsageError(
            f"{train} holds no images (train/<wnid>/images/*.JPEG); the split is empty"
        )
    return out


def val_files(root: Path, wnids: list[str], limit: int | None) -> list[list[Path]]:
    """val/images/*.JPEG per class as val_annotations.txt labels them, by file name."""
    ann = _need(root / "val" / "val_annotations.txt", "it labels the validation images")
    index = {w: i for i, w in enumerate(wnids)}
    out: list[list[Path]] = [[] for _ in wnids]
    for number, line in enumerate(ann.read_text().splitlines(), 1):
        parts = line.split("\t")
        if not line.strip():
            continue
        if len(parts) < 2:
            raise UsageError(f"{ann} line {number} is not '<file>\\t<wnid>...'; fix the file")
        name, wnid = parts[0].strip(), parts[1].strip()
        if wnid not in index:
            raise UsageError(
                f"{ann} line {number} labels {name} with {wnid}, a wnid absent from "
                f"{root / 'wnids.txt'}; fix one of the two files"
            )
        out[index[wnid]].append(root / "val" / "images" / name)
    for i, files in enumerate(out):
        files.sort(key=lambda f: f.name)
        out[i] = files[:limit] if limit else files
    if not any(out):
        raise UsageError(f"{ann} labels no images; the validation split is empty")
    missing = next((f for files in out for f in files if not f.is_file()), None)
    if missing is not None:
        raise UsageError(f"{missing} is listed in {ann} but missing; restore it or unzip again")
    return out


def _labelled(per_class: list[list[Path]]) -> tuple[list[Path], torch.Tensor]:
    files = [f for fs in per_class for f in fs]
    labels = [c for c, fs in enumerate(per_class) for _ in fs]
    return files, torch.tensor(labels, dtype=torch.long)


@register("tinyimagenet")
def _tinyimagenet(req: LoadRequest) -> Loaded:
    """Tiny-ImageNet-200 from its unpacked zip: 100,000 train and 10,000 val images, 64x64."""
    root = data_root(
        req.data_dir,
        "--dataset tinyimagenet needs --data-dir DIR: the tiny-imagenet-200/ folder its zip "
        "unpacks to",
    )
    opts = req.opts
    wnids = read_wnids(root)
    # the validation images leave train/ first; then --train-per-class keeps the first N
    all_train = train_files(root, wnids, None)
    kept, held = split_lists(all_train, wnids, opts.holdout, req.train_per_class)
    tests = val_files(root, wnids, req.test_per_class)
    parts = {"train": _labelled(kept), "test": _labelled(tests)}
    if held is not None:
        parts["val"] = _labelled(held)
    stamp = stamps((*parts["train"][0], *parts["test"][0]))
    val = None if held is None else [str(f) for f in parts["val"][0]]
    key = cache_key("tinyimagenet", [wnids, stamp], val)
    # the folder's own val/ is our test split; held-out training images are "validation"
    what = {"train": "train", "test": "val", "val": "held-out train"}

    def build() -> tuple[dict, dict[str, Split]]:
        splits = {}
        for name, (files, labels) in parts.items():
            arrays = decode_files(
                files,
                TINY_SIZE,
                workers=opts.workers,
                progress=opts.progress,
                what=f"Tiny-ImageNet {what[name]} JPEGs",
            )
            x = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
            splits[name] = Split(x, labels)
        return {"classes": read_words(root, wnids)}, splits

    info, splits = _cached(key, build)
    spec = folder_spec("tinyimagenet", info["classes"], TINY_STATS, TINY_SIZE, root)
    return spec, splits["train"], splits["test"], splits.get("val")
