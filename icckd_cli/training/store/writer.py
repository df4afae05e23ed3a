"""Writing a teacher-output store: the teacher run once over every batch of every epoch.

One process writes a store at a time (lock.py). A killed write continues from the batches
its progress record counts; complete.json, with the files' sizes and checksums, comes last.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icckd_cli.base.atomic import write_text_atomic
from icckd_cli.base.errors import INTERRUPTED, IcckdError, UsageError
from icckd_cli.data import Batch
from icckd_cli.training.devices import autocast
from icckd_cli.training.engine import Callback
from icckd_cli.training.store.format import (
    COMPLETE,
    FORMAT_VERSION,
    GB,
    HEADER,
    PROGRESS,
    Layout,
    check_match,
    checksums,
    damaged,
    layout_of,
    read_json,
    status,
)
from icckd_cli.training.store.lock import LOCK, writer_lock
from icckd_cli.training.store.progress import read_progress, save_progress, verified
from icckd_cli.training.store.reader import open_arrays

SAVE_EVERY = 64  # batches between progress records while writing

TeacherFn = Callable[[Batch, int], tuple[Tensor, Tensor | None]]


def _rows(logits: Tensor, feats: Tensor | None, layout: Layout) -> dict[str, np.ndarray]:
    """One batch's outputs as the store's rows."""
    dtype = getattr(torch, layout.dtype)
    out: dict[str, np.ndarray] = {}
    lf = logits.detach().float()
    if layout.topk:
        values, idx = lf.topk(layout.topk, dim=1)
        out["topk_logits"] = values.to(dtype).cpu().numpy()
        out["topk_index"] = idx.cpu().numpy().astype(layout.arrays()["topk_index"][1])
        out["rest"] = lf.scatter(1, idx, float("-inf")).logsumexp(dim=1).cpu().numpy()
    else:
        out["logits"] = logits.detach().to(dtype).cpu().numpy()
    if layout.embeddings:
        assert feats is not None
        out["features"] = feats.detach().to(dtype).cpu().numpy()
    return out


def check_limit(folder: Path, layout: Layout, limit_gb: float) -> None:
    """Refuse a store over --teacher-cache-limit-gb before anything is created."""
    need = layout.nbytes()
    if need > limit_gb * GB:
        raise UsageError(
            f"the teacher cache {folder} would take {need / GB:.3g} GB, more than "
            f"--teacher-cache-limit-gb {limit_gb:g}; keep fewer logits (--teacher-cache-topk K), "
            "raise the limit, or distill without the cache"
        )


def _fresh(folder: Path, layout: Layout, ident: dict[str, Any], limit_gb: float) -> dict:
    """A new store: size checks, then empty arrays, then the header."""
    check_limit(folder, layout, limit_gb)
    need = layout.nbytes()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise IcckdError(
            f"cannot write the teacher cache {folder} ({exc.strerror or exc}); choose a "
            "writable --teacher-cache folder"
        ) from None
    if need > free:
        raise IcckdError(
            f"the teacher cache {folder} needs {need / GB:.3g} GB but its disk has "
            f"{free / GB:.3g} GB free; free space, keep fewer logits (--teacher-cache-topk K) "
            "or distill without the cache"
        )
    for name in (COMPLETE, PROGRESS, HEADER):
        (folder / name).unlink(missing_ok=True)
    arrays = {}
    for stem, (shape, dtype) in layout.arrays().items():
        path = folder / f"{stem}.npy"
        path.unlink(missing_ok=True)
        arrays[stem] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    header = {"format": "icckd-teacher-cache", "format_version": FORMAT_VERSION}
    header.update({"identity": ident, "layout": asdict(layout)})
    write_text_atomic(folder / HEADER, json.dumps(header, indent=2) + "\n")
    return arrays


def _check_complete(folder: Path, ident: dict[str, Any], layout: Layout) -> None:
    header = read_json(folder / HEADER)
    if header is None:
        raise damaged(folder, folder / HEADER, "unreadable")
    check_match(folder, header, ident, layout)


def _check_folder(folder: Path) -> None:
    """Refuse a store path that is (or lies under) a file, before mkdir says "File exists"."""
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise UsageError(
                    f"teacher cache {folder}: {path} is a file, not a folder; give "
                    "--teacher-cache a folder (a new one is created), or move the file away"
                )
            return


def ensure_store(
    folder: Path,
    ident: dict[str, Any],
    layout: Layout,
    teacher: TeacherFn,
    loader: Any,
    *,
    device: torch.device,
    precision: str = "fp32",
    limit_gb: float = 32.0,
    callback: Callback = lambda event, info: None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> None:
    """Write the store unless it is complete: a half-written one continues, a foreign one fails.

    The teacher runs on the loader's batches exactly as a student's step would run it (same
    batches, autocast and layout), so a float32 store holds the very numbers it would compute.
    Another process writing the same store is refused (lock.py).
    """
    folder = Path(folder)
    _check_folder(folder)
    if status(folder) == "complete":
        return _check_complete(folder, ident, layout)
    if status(folder) == "absent":
        check_limit(folder, layout, limit_gb)  # before the lock creates the folder
    with writer_lock(folder):
        if status(folder) != "complete":  # else another process finished it meanwhile
            _write(folder, ident, layout, teacher, loader, device, precision, limit_gb,
                   callback, stop_requested)  # fmt: skip
        # a sealed store is never written again: no lock file is left to suggest a writer
        # (unlinked while held, so a later writer finds the store complete under its own)
        (folder / LOCK).unlink(missing_ok=True)
    return _check_complete(folder, ident, layout)


def _write(
    folder: Path,
    ident: dict[str, Any],
    layout: Layout,
    teacher: TeacherFn,
    loader: Any,
    device: torch.device,
    precision: str,
    limit_gb: float,
    callback: Callback,
    stop_requested: Callable[[], bool],
) -> None:
    """The write itself, under the lock."""
    header = read_json(folder / HEADER)
    arrays: dict | None = None
    done = 0
    sums: list[tuple[int, str]] = []  # batches kept, and their checksums (progress.py)
    if header is not None:
        check_match(folder, header, ident, layout)
        layout = layout_of(folder, header)  # keep what it holds (embeddings)
        try:
            arrays = open_arrays(folder, layout, None, "r+")
        except IcckdError:  # killed while creating its files: start again
            arrays = None
    total = layout.epochs * layout.steps
    info: dict[str, Any] = {"path": str(folder), "bytes": layout.nbytes(), "total": total}
    if arrays is not None:
        counted, recorded = read_progress(folder)
        done, sums = verified(arrays, layout, min(counted, total), recorded)
        if done < counted:  # never sealed over: those batches are written again
            callback("teacher_cache", {"action": "damaged", **info, "done": done,
                                       "counted": counted})  # fmt: skip
    action = "write" if not done else "seal" if done == total else "resume"
    if arrays is None:
        arrays = _fresh(folder, layout, ident, limit_gb)
    callback("teacher_cache", {"action": action, **info, "done": done, "dtype": layout.dtype})
    start_epoch, start_step = divmod(done, layout.steps)
    for epoch in range(start_epoch, layout.epochs):
        for batch in loader.epoch(epoch, start_step if epoch == start_epoch else 0):
            with autocast(device, precision):
                logits, feats = teacher(batch, epoch)
            lo = batch.step * layout.batch_size
            hi = lo + int(batch.index.shape[0])
            arrays["index"][epoch, lo:hi] = batch.index.cpu().numpy()
            for stem, rows in _rows(logits, feats, layout).items():
                arrays[stem][epoch, lo:hi] = rows
            done += 1
            callback("teacher_cache_pass", {"done": done, "total": total})
            if done % SAVE_EVERY == 0 or batch.step == layout.steps - 1:
                save_progress(folder, arrays, layout, done, sums)
            if stop_requested():
                save_progress(folder, arrays, layout, done, sums)
                raise IcckdError(
                    f"interrupted while writing the teacher cache {folder} ({done} of {total} "
                    "batches kept); run the same command again to continue it",
                    INTERRUPTED,
                )
    save_progress(folder, arrays, layout, done, sums)
    stems = list(arrays)
    sizes = {stem: (folder / f"{stem}.npy").stat().st_size for stem in stems}
    del arrays
    record = {"batches": done, "sizes": sizes, "checksums": checksums(folder, stems)}
    write_text_atomic(folder / COMPLETE, json.dumps(record) + "\n")
