"""The teacher-output store's format: its files, what it was made for, its checksums.

One store folder per process (under torchrun rank r of w uses DIR/rank{r}-of-{w}):

    header.json       what it was made for (teacher, data, augmentation, epochs) and its arrays
    logits.npy        (E, R, C) the teacher's logits, R rows an epoch in batch order; or, top-k:
    topk_logits.npy   (E, R, K) and topk_index.npy (E, R, K) and rest.npy (E, R)
    features.npy      (E, R, D) pooled penultimate features, where kept
    index.npy         (E, R) each row's data set index, checked against the batches read
    progress.json     batches written so far, with checksums of their rows (progress.py):
                      a killed write checks them, then continues from there
    writing.lock      held (an OS file lock) by the one process writing the store (lock.py);
                      removed once the store is complete
    complete.json     written last, atomically: the files' sizes and checksums; only then is
                      the store read

Checksums (format 2): SHA-256 of each array file in chunks of CHUNK bytes (64 MiB), the
.npy header included, and of header.json whole. Per chunk rather than per file: a check
holds PIECE bytes (8 MiB) a thread in memory, hashes up to WORKERS chunks at once, and
names the damaged byte range. The reader checks every chunk once, before the student's
first step, so a damaged store is refused before anything is written into --out; for a
CIFAR-100 store (2.5 GB) that is about 1.5 CPU s (docs/performance.md). SHA-256 because it
runs at about 1.9 GB/s a core with the CPU's SHA instructions, enough here, and is the hash
the checkpoints use. A store written before format 2 holds no checksums and is refused in
one line that says to rebuild it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.data import DataSpec

FORMAT_VERSION = 2  # 2: complete.json holds checksums
HEADER, PROGRESS, COMPLETE = "header.json", "progress.json", "complete.json"
CHUNK = 1 << 26  # bytes an array file's checksum covers (the last chunk: the rest)
PIECE = 1 << 23  # bytes read at a time while hashing a chunk
WORKERS = min(4, os.cpu_count() or 1)  # chunks hashed at once
GB = 1e9


def shard_folder(root: Path, rank: int = 0, world: int = 1) -> Path:
    """The folder of this process's store: root itself, or root/rank{r}-of-{w} under torchrun."""
    return Path(root) if world == 1 else Path(root) / f"rank{rank}-of-{world}"


@dataclass
class Layout:
    """The arrays of a store: E epochs of `steps` batches, R rows an epoch."""

    epochs: int
    steps: int
    rows: int
    batch_size: int
    classes: int
    feature_dim: int
    dtype: str  # float16 or float32
    topk: int | None
    embeddings: bool

    def arrays(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """File stem -> (shape, numpy dtype)."""
        e, r = self.epochs, self.rows
        out: dict[str, tuple[tuple[int, ...], str]] = {"index": ((e, r), "int64")}
        if self.topk:
            kind = "int16" if self.classes <= 2**15 else "int32"
            out["topk_logits"] = ((e, r, self.topk), self.dtype)
            out["topk_index"] = ((e, r, self.topk), kind)
            out["rest"] = ((e, r), "float32")
        else:
            out["logits"] = ((e, r, self.classes), self.dtype)
        if self.embeddings:
            out["features"] = ((e, r, self.feature_dim), self.dtype)
        return out

    def nbytes(self) -> int:
        """The store's size on disk (headers of the .npy files aside)."""
        return sum(math.prod(s) * np.dtype(d).itemsize for s, d in self.arrays().values())


def rows_per_epoch(n: int, world: int, batch_size: int, steps: int) -> int:
    """Rows an epoch covers: every batch's images (a dropped last batch of one excluded)."""
    return min(steps * batch_size, n // world)


def subset_hash(index: Tensor, labels: Tensor) -> str:
    """Identifies which images (and labels) a training split holds."""
    h = hashlib.sha256()
    for t in (index, labels):
        h.update(t.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def identity(
    teacher_sha256: str,
    spec: DataSpec,
    split: Any,
    train_per_class: int | None,
    loader: Any,
    epochs: int,
) -> dict[str, dict[str, Any]]:
    """What a store must agree on with the run reading it, grouped as the errors name it."""
    return {
        "teacher": {"sha256": teacher_sha256},
        "data": {
            "dataset": spec.name,
            "train_per_class": train_per_class,
            "images": len(split),
            "subset": subset_hash(split.index, split.labels),
            "mean": [float(m) for m in spec.mean],
            "std": [float(s) for s in spec.std],
        },
        "augmentation": {
            "data_seed": int(loader.seed),
            "crop_padding": getattr(loader, "padding", None),
            "flip": bool(spec.flip),
            "batch_size": int(loader.batch_size),
            "views": int(loader.views),
            "processes": int(loader.world),
            "rank": int(loader.rank),
        },
        "epochs": {"epochs": int(epochs)},
    }


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def status(folder: Path) -> str:
    """complete, partial (a header, no completion marker) or absent."""
    if (folder / COMPLETE).is_file():
        return "complete"
    return "partial" if (folder / HEADER).is_file() else "absent"


def damaged(folder: Path, path: Path, why: str) -> IcckdError:
    """The one-line refusal of a damaged store file, with the fix."""
    return IcckdError(
        f"teacher cache file {path} is damaged ({why}); delete {folder} to rebuild the store"
    )


def layout_of(folder: Path, header: dict[str, Any]) -> Layout:
    """The layout a header records; a header without a whole one is damaged."""
    try:
        return Layout(**header["layout"])
    except (KeyError, TypeError):
        raise damaged(folder, folder / HEADER, "it records no layout") from None


# ----------------------------------------------------------------------------- checks


def _short(value: Any) -> str:
    """A value for an error line; hashes shortened to 12 digits."""
    if isinstance(value, str):
        return value[:12] if len(value) > 16 else value
    return json.dumps(value)


def check_match(
    folder: Path, header: dict[str, Any], wanted: dict[str, Any], layout: Layout
) -> None:
    """Refuse, in one line naming what differs, a store made for another run."""
    stored = header.get("identity") or {}
    for group, values in wanted.items():
        there = stored.get(group) or {}
        diffs = [
            f"{key} {_short(there.get(key))} there, {_short(value)} here"
            for key, value in values.items()
            if there.get(key) != value
        ]
        if diffs:
            seed = there.get("data_seed")
            hint = ""
            if group == "augmentation" and seed != values.get("data_seed") and seed is not None:
                hint = f"pass --data-seed {seed} (the seed it was written under) to read it, "
            raise UsageError(
                f"teacher cache {folder} was made for another run: its {group} differs "
                f"({'; '.join(diffs)}); {hint}use another --teacher-cache folder, or delete "
                f"{folder} to rebuild it"
            )
    have = header.get("layout") or {}
    diffs = [
        f"{key} {_short(have.get(key))} there, {_short(getattr(layout, key))} here"
        for key in ("dtype", "topk", "classes", "steps", "rows")
        if have.get(key) != getattr(layout, key)
    ]
    if diffs:
        raise UsageError(
            f"teacher cache {folder} holds other contents ({'; '.join(diffs)}); use another "
            f"--teacher-cache folder, or delete {folder} to rebuild it"
        )
    if layout.embeddings and not have.get("embeddings"):
        raise UsageError(
            f"teacher cache {folder} holds no teacher embeddings, which RKD and CRD need; "
            f"use another --teacher-cache folder, or delete {folder} to rebuild it with them"
        )


# ----------------------------------------------------------------------------- checksums


def _chunk_sum(fd: int, start: int, length: int) -> str:
    """SHA-256 (hex) of `length` bytes of an open file from `start`, read PIECE at a time."""
    h, pos, end = hashlib.sha256(), start, start + length
    while pos < end and (data := os.pread(fd, min(PIECE, end - pos), pos)):
        h.update(data)
        pos += len(data)
    return h.hexdigest()


def chunk_sums(path: Path, chunk: int = CHUNK) -> list[str]:
    """SHA-256 (hex) of each `chunk` bytes of a file: every byte read once, chunks hashed on
    up to WORKERS threads (reads and hashing release the GIL), PIECE bytes each in memory."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            parts = pool.map(lambda lo: _chunk_sum(fd, lo, min(chunk, size - lo)),
                             range(0, size, chunk))  # fmt: skip
            return list(parts)
    finally:
        os.close(fd)


def checksums(folder: Path, stems: list[str]) -> dict[str, Any]:
    """What complete.json records to check the store: header.json and each array file."""
    files = {stem: chunk_sums(folder / f"{stem}.npy") for stem in stems}
    header = hashlib.sha256((folder / HEADER).read_bytes()).hexdigest()
    return {"algorithm": "sha256", "chunk_bytes": CHUNK, "header": header, "files": files}


def verify_header(folder: Path, done: dict[str, Any]) -> None:
    """Refuse a store without checksums, or whose header.json differs from its checksum.

    Run before the header is read, so a damaged header is never trusted.
    """
    sums = done.get("checksums")
    if not isinstance(sums, dict):
        raise IcckdError(
            f"teacher-output store {folder} holds no checksums (an earlier icckd wrote it); "
            f"delete {folder} to rebuild the store"
        )
    if hashlib.sha256((folder / HEADER).read_bytes()).hexdigest() != sums.get("header"):
        raise damaged(folder, folder / HEADER, "its checksum differs from complete.json's")


def verify(folder: Path, stems: list[str], done: dict[str, Any]) -> None:
    """Refuse, naming the file and byte range, a store whose bytes differ from its checksums."""
    verify_header(folder, done)
    sums = done["checksums"]
    chunk = int(sums.get("chunk_bytes") or CHUNK)
    for stem in stems:
        path = folder / f"{stem}.npy"
        wanted = (sums.get("files") or {}).get(stem)
        if not isinstance(wanted, list):
            raise damaged(folder, folder / COMPLETE, f"no checksums of {path.name}")
        got = chunk_sums(path, chunk)
        for i, (a, b) in enumerate(zip(got, wanted, strict=False)):
            if a != b:
                lo, hi = i * chunk, min((i + 1) * chunk, path.stat().st_size)
                why = f"bytes {lo} to {hi} differ from their checksum in complete.json"
                raise damaged(folder, path, why)
        if len(got) != len(wanted):
            raise damaged(folder, path, f"{len(got)} chunks, not {len(wanted)}")
