"""What the folder loaders share: the data folder check, the decode cache's key, the spec.

`imagefolder`, `tinyimagenet` and the streamed `imagenet` read a folder of image files; each
checks the folder the same way, keys its decoded cache on the files' names, sizes and times,
and describes itself with a `DataSpec` of the folder's classes, flips on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from icckd_cli.base.errors import UsageError
from icckd_cli.data.registry import CACHE_VERSION, DataSpec


def data_root(data_dir: Path | None, needs: str) -> Path:
    """The --data-dir folder, or one line saying what is missing (`needs`: when not given)."""
    if data_dir is None:
        raise UsageError(needs)
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"data directory {root} does not exist; check --data-dir")
    return root


FOLDER_SETS = ("imagefolder", "tinyimagenet", "imagenet")  # the loaders that call data_root
ARCHIVE = "cifar10-jpeg"  # the CIFAR-10 JPEG archive's folder, as `tar xzf` unpacks it


def check_folder(dataset: str, data_dir: Path | str | None, where: str) -> None:
    """Refuse, naming the fix, a folder data set whose data_dir is missing, before any run.

    What data_root checks when the data are read, made up front (an experiment, its dry run).
    `where`: how the user set the folder (`data_dir in FILE`).
    """
    if dataset not in FOLDER_SETS or data_dir is None or Path(data_dir).is_dir():
        return
    root = Path(data_dir)
    unpack = "unpack the data set there"
    if root.name == ARCHIVE:
        unpack = f"unpack the archive there (`tar xzf {ARCHIVE}.tgz -C {root.parent}` gives "
        unpack += f"{root}/train/<class>/*.jpg and {root}/test/)"
    raise UsageError(
        f"data directory {root} ({where}) does not exist; {unpack}, or set data_dir to the "
        "folder holding train/ and test/"
    )


def stamps(files: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(path, size, modification time in ns) of each file: what a cached decode depends on."""
    out = []
    for f in files:
        stat = f.stat()
        out.append((str(f), stat.st_size, stat.st_mtime_ns))
    return out


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def cache_key(name: str, files: object, val: object | None = None) -> dict:
    """The decode cache's key: the data set, the cache version, digests of what was read.

    `files` describes the training and test files, `val` the held-out validation files (left
    out of the key when there is no validation split, so older caches stay valid).
    """
    key = {"name": name, "v": CACHE_VERSION, "files": _digest(files)}
    if val is not None:
        key["val"] = _digest(val)
    return key


def folder_spec(
    name: str,
    classes: list[str],
    stats: tuple[Sequence[float], Sequence[float]],
    image_size: int,
    root: Path,
) -> DataSpec:
    """The spec of a data set read from `root`: its classes, (mean, std), size, flips on."""
    mean, std = stats
    return DataSpec(
        name, len(classes), classes, list(mean), list(std), image_size, True, str(root.resolve())
    )
