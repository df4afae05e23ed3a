"""Reading a complete teacher-output store: checked once, then memory-mapped batch by batch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icckd_cli.base.errors import IcckdError
from icckd_cli.base.npyfile import is_npy
from icckd_cli.data import Batch
from icckd_cli.training.store.format import (
    COMPLETE,
    HEADER,
    Layout,
    check_match,
    damaged,
    layout_of,
    read_json,
    status,
    verify,
    verify_header,
)


def open_arrays(folder: Path, layout: Layout, sizes: dict[str, int] | None, mode: str) -> dict:
    """The store's arrays memory-mapped; a missing or mis-shaped file is an error naming it."""
    arrays = {}
    for stem, (shape, dtype) in layout.arrays().items():
        path = folder / f"{stem}.npy"
        if not path.is_file():
            raise damaged(folder, path, "missing")
        if sizes is not None and path.stat().st_size != sizes.get(stem):
            raise damaged(folder, path, f"{path.stat().st_size} bytes, not {sizes.get(stem)}")
        if not is_npy(path):  # numpy's own message would talk of pickled data
            raise damaged(folder, path, "it is not a NumPy array file: no .npy header")
        try:
            arr = np.load(path, mmap_mode=mode)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else "unreadable"
            raise damaged(folder, path, why) from None
        if arr.shape != shape or arr.dtype != np.dtype(dtype):
            raise damaged(folder, path, f"shape {arr.shape} {arr.dtype}, not {shape} {dtype}")
        arrays[stem] = arr
    return arrays


def rebuild_logits(values: Tensor, index: Tensor, rest: Tensor, classes: int) -> Tensor:
    """Full logits (B, C) from the top-k ones (B, K), their classes (B, K), rest (B,).

    `rest` is the logsumexp of the other C - K logits. Each of them gets rest - log(C - K):
    at T = 1 the top-k probabilities are the teacher's exactly and the remaining probability
    mass is spread uniformly over the other classes, which is how we read the fast-KD paper's
    top-k soft labels (Shen & Xing, ECCV 2022; from memory, not re-checked offline); at
    another temperature this is an approximation.
    """
    k = values.shape[1]
    fill = (rest.float() - math.log(classes - k))[:, None]
    out = fill.expand(values.shape[0], classes).clone()
    return out.scatter_(1, index.long(), values.float())


class StoreReader:
    """A TeacherSource reading a complete store: (logits (B, C), features (B, D) or None)."""

    def __init__(self, folder: Path, layout: Layout, sizes: dict[str, int], device: Any) -> None:
        self.folder, self.layout, self.device = Path(folder), layout, device
        self.arrays = open_arrays(self.folder, layout, sizes, "r")
        self.feature_dim = layout.feature_dim
        self._checked: set[int] = set()

    def _get(self, stem: str, epoch: int, lo: int, hi: int) -> Tensor:
        return torch.from_numpy(np.array(self.arrays[stem][epoch, lo:hi])).to(self.device)

    def __call__(self, batch: Batch, epoch: int) -> tuple[Tensor, Tensor | None]:
        n = int(batch.index.shape[0])
        lo = batch.step * self.layout.batch_size
        if batch.step < 0 or epoch >= self.layout.epochs or lo + n > self.layout.rows:
            raise IcckdError(
                f"teacher cache {self.folder} holds no batch {batch.step + 1} of epoch "
                f"{epoch + 1}; delete it to rebuild the store"
            )
        if epoch not in self._checked:  # one host copy an epoch: the same images, in order
            self._checked.add(epoch)
            stored = torch.from_numpy(np.array(self.arrays["index"][epoch, lo : lo + n]))
            if not torch.equal(stored, batch.index.detach().to("cpu", torch.int64)):
                raise IcckdError(
                    f"teacher cache {self.folder} holds other images for batch {batch.step + 1}"
                    f" of epoch {epoch + 1} than this run sees; delete it to rebuild the store"
                )
        if self.layout.topk:
            logits = rebuild_logits(
                self._get("topk_logits", epoch, lo, lo + n),
                self._get("topk_index", epoch, lo, lo + n),
                self._get("rest", epoch, lo, lo + n),
                self.layout.classes,
            )
        else:
            logits = self._get("logits", epoch, lo, lo + n).float()
        feats = None
        if self.layout.embeddings:
            feats = self._get("features", epoch, lo, lo + n).float()
        return logits, feats

    def train(self, mode: bool = True) -> StoreReader:
        """Nothing to switch: the outputs are fixed."""
        return self


def open_store(folder: Path, ident: dict[str, Any], layout: Layout, device: Any) -> StoreReader:
    """A complete store that matches the run, its checksums verified, ready to read.

    Never a half-written one; a damaged one is refused in one line naming the file.
    """
    folder = Path(folder)
    if status(folder) != "complete":
        raise IcckdError(
            f"teacher cache {folder} is not complete (its writing was stopped); run the same "
            "command again to finish it"
        )
    done = read_json(folder / COMPLETE)
    if done is None or not isinstance(done.get("sizes"), dict):
        raise damaged(folder, folder / COMPLETE, "unreadable")
    if (folder / HEADER).is_file():
        verify_header(folder, done)  # the header is trusted only once it checks out
    header = read_json(folder / HEADER)
    if header is None:
        raise damaged(folder, folder / HEADER, "unreadable")
    check_match(folder, header, ident, layout)
    stored = layout_of(folder, header)
    reader = StoreReader(folder, stored, done["sizes"], device)  # sizes and shapes first
    verify(folder, list(stored.arrays()), done)
    return reader
