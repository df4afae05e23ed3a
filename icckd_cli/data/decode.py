"""Image files -> uint8 arrays: one image with PIL, many in parallel worker processes.

Every mode (greyscale, palette, CMYK, RGBA) becomes 3-channel RGB; alpha is dropped.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from icckd_cli.base.errors import IcckdError

CHUNK = 256  # files per task: large enough to amortise the hand-over, small for progress
PARALLEL_MIN = 2048  # below this many files one process decodes faster than starting a pool


def usable_cores() -> int:
    """Cores this process may run on, shared among the torchrun processes of this machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cores // max(local, 1))


def unreadable(path: Path | str, exc: BaseException) -> IcckdError:
    """The one-line error for an image file that cannot be decoded."""
    why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return IcckdError(f"cannot read image {path} ({why}); remove or replace it")


def read_rgb_resized(path: Path | str, size: int | None) -> tuple[np.ndarray, bool]:
    """One image as (H, W, 3) uint8, resized to (size, size) where it differs; and whether
    it was."""
    with Image.open(path) as raw:
        im = raw.convert("RGB")
        if size is None or im.size == (size, size):
            return np.asarray(im, dtype=np.uint8), False
        im = im.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8), True


def read_rgb(path: Path | str, size: int | None) -> np.ndarray:
    """One image as (H, W, 3) uint8, resized to (size, size) where it differs."""
    return read_rgb_resized(path, size)[0]


Decoded = tuple[np.ndarray | None, int, str, str]


def _decode_chunk(paths: Sequence[str], size: int) -> Decoded:
    """(images (K, S, S, 3), how many were resized, '', '') or (None, 0, the file that
    failed, why): runs in a worker."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    resized = 0
    for i, p in enumerate(paths):
        try:
            out[i], changed = read_rgb_resized(p, size)
        except (OSError, ValueError) as exc:  # PIL: truncated, unidentified, bad mode
            return None, 0, p, str(exc)
        resized += changed
    return out, resized, "", ""


def _context() -> Any:
    """fork where it exists (workers start in milliseconds), spawn elsewhere."""
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method)


def decode_files(
    files: Sequence[Path],
    size: int,
    *,
    workers: int | None = None,
    progress: Callable[[str, dict[str, Any]], None] = lambda e, i: None,
    what: str = "images",
) -> np.ndarray:
    """Decode `files` into (N, size, size, 3) uint8, in parallel when there are many.

    Progress goes to `progress("decode", {"what", "done", "total"})`; images of another
    size are resized and counted in one "warning" event; an unreadable file is a one-line
    error naming it.
    """
    n = len(files)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    paths = [str(f) for f in files]
    chunks = [(i, paths[i : i + CHUNK]) for i in range(0, n, CHUNK)]
    procs = min(workers or usable_cores(), len(chunks))
    label = f"decoding {n:,} {what}" + (f" in {procs} processes" if procs > 1 else "")
    progress("decode", {"what": label, "done": 0, "total": n})
    done = resized = 0

    def take(start: int, result: Decoded) -> None:
        nonlocal done, resized
        images, changed, bad, why = result
        if images is None:
            raise unreadable(bad, OSError(why))
        out[start : start + len(images)] = images
        done += len(images)
        resized += changed
        progress("decode", {"what": label, "done": done, "total": n})

    if procs <= 1 or n < PARALLEL_MIN:
        for start, chunk in chunks:
            take(start, _decode_chunk(chunk, size))
    else:
        pool = ProcessPoolExecutor(procs, mp_context=_context())
        try:
            futures = [(start, pool.submit(_decode_chunk, chunk, size)) for start, chunk in chunks]
            for start, fut in futures:
                take(start, fut.result())
        finally:
            pool.shutdown(cancel_futures=True)  # after an unreadable file: stop the rest at once
    if resized:  # a stretched image changes what the model sees: never silently
        message = f"{resized:,} of the {n:,} {what} are not {size}x{size} pixels; they were "
        message += f"resized (stretched, bilinear) to {size}x{size}"
        progress("warning", {"message": message})
    return out
