"""Reading the published CIFAR-10-C / CIFAR-100-C release (Hendrycks & Dietterich, ICLR 2019).

The layout, as released: a folder of `<corruption>.npy` files, each uint8 (5 x N, H, W, 3)
(N = 10,000 and 32x32 in the release), severities 1 to 5 in blocks of N in that order, and
`labels.npy`, the N labels of a block repeated for each of the five (5 x N), or just N. Every
`.npy` file but labels.npy is a corruption. Users download the release themselves; nothing
here fetches it. Files are opened memory-mapped, one block is read at a time, and everything
(dtype, shapes, label count, the checkpoint's image size, channels and classes) is checked
before the first image is evaluated, each mistake refused in one line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from icckd_cli.base.errors import UsageError, first_line
from icckd_cli.base.npyfile import is_npy
from icckd_cli.data.corruptions import SEVERITIES, CorruptedBlock

LABELS_FILE = "labels.npy"
OPTION = "--corruptions-dir"


@dataclass
class CorruptionsDir:
    """A checked release folder: corruption names (sorted), images per severity, labels."""

    path: Path
    corruptions: list[str]
    n: int  # images per severity
    image_size: tuple[int, int]  # (H, W)
    labels: np.ndarray  # (5, N) int64, one row per severity


def _load(path: Path) -> np.ndarray:
    """A .npy file memory-mapped (its header read, its data not), or a one-line UsageError."""
    if path.is_file() and not is_npy(path):
        raise UsageError(
            f"{path} is not a NumPy array file (it does not begin with the .npy header); "
            "download it again"
        )
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(
            f"{path} is not a readable .npy array ({first_line(exc)}); download it again"
        ) from exc
    if not isinstance(a, np.ndarray):
        raise UsageError(f"{path} is not a single .npy array; download it again")
    return a


def open_corruptions_dir(path: Path) -> CorruptionsDir:
    """Check a CIFAR-10-C-layout folder and describe it; UsageError in one line if it is not."""
    path = Path(path)
    layout = "<corruption>.npy files and labels.npy, as in the CIFAR-10-C release"
    if not path.is_dir():
        raise UsageError(f"{OPTION} {path} is not a folder; give the folder holding {layout}")
    if not (path / LABELS_FILE).is_file():
        raise UsageError(f"{path} has no {LABELS_FILE}; give {OPTION} the folder holding {layout}")
    files = sorted(p for p in path.glob("*.npy") if p.name != LABELS_FILE)
    if not files:
        raise UsageError(f"{path} has no <corruption>.npy file besides {LABELS_FILE}; {layout}")
    shape: tuple[int, ...] | None = None
    for f in files:
        a = _load(f)
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[3] != 3 or a.shape[0] % 5:
            raise UsageError(
                f"{f} holds {a.dtype} {a.shape}; a corruption file is uint8 (5 x N, H, W, 3): "
                "five severities of N RGB images"
            )
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise UsageError(
                f"{f} holds {a.shape} but {files[0].name} holds {shape}; every corruption "
                "file of a release holds the same images"
            )
    assert shape is not None
    total, size = shape[0], (shape[1], shape[2])
    n = total // 5
    labels = _load(path / LABELS_FILE)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UsageError(f"{path / LABELS_FILE} holds {labels.dtype} {labels.shape}, not labels")
    if labels.shape[0] not in (n, 5 * n):
        raise UsageError(
            f"{path / LABELS_FILE} holds {labels.shape[0]} labels for {total} images per "
            f"corruption (5 x {n}); it belongs to another release"
        )
    rows = np.asarray(labels, dtype=np.int64).reshape(-1, n)
    rows = np.repeat(rows, 5, axis=0) if rows.shape[0] == 1 else rows
    if n and rows.min() < 0:
        raise UsageError(f"{path / LABELS_FILE} holds negative labels")
    return CorruptionsDir(path, [f.stem for f in files], n, size, rows)


def check_checkpoint(
    cdir: CorruptionsDir, num_classes: int, image_size: int, channels: int, source: str
) -> None:
    """A checkpoint must take the release's images (H x W RGB) and predict its classes."""
    h, w = cdir.image_size
    if channels != 3 or (h, w) != (image_size, image_size):
        raise UsageError(
            f"{source} takes {image_size}x{image_size} images with {channels} channels but "
            f"{cdir.path} holds {h}x{w} RGB images; use a checkpoint trained on the release's "
            "data set (32x32 CIFAR-10 for CIFAR-10-C, CIFAR-100 for CIFAR-100-C)"
        )
    found = np.unique(cdir.labels)
    top = int(found.max()) + 1 if found.size else 0
    fix = "use the release of the checkpoint's data set (CIFAR-10-C for CIFAR-10, CIFAR-100-C "
    fix += "for CIFAR-100)"
    if top > num_classes:  # a label the checkpoint has no output for, however many there are
        raise UsageError(
            f"{cdir.path / LABELS_FILE} holds labels up to {top - 1} but {source} predicts "
            f"only classes 0..{num_classes - 1}; {fix}"
        )
    if found.size and found.size != num_classes:
        raise UsageError(
            f"{source} predicts {num_classes} classes but {cdir.path / LABELS_FILE} holds "
            f"{found.size} distinct labels; {fix}"
        )


def corruption_blocks(
    cdir: CorruptionsDir, corruptions: Sequence[str] | None = None
) -> Iterator[CorruptedBlock]:
    """Every (corruption, severity) block as uint8 (N, 3, H, W) images, read one at a time."""
    for name in cdir.corruptions if corruptions is None else corruptions:
        array = _load(cdir.path / f"{name}.npy")
        for severity in SEVERITIES:
            block = np.array(array[(severity - 1) * cdir.n : severity * cdir.n])  # read, writable
            images = torch.from_numpy(block).permute(0, 3, 1, 2).contiguous()
            labels = torch.from_numpy(cdir.labels[severity - 1].copy())
            yield CorruptedBlock(name, severity, images, labels)
