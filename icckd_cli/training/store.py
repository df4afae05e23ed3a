"""The teacher-output store: a frozen teacher's outputs on one augmentation stream, on disk.

Every student of a teacher that sees the same augmented batches would repeat the same
teacher passes. The store runs the teacher once over every batch of every epoch of one
stream (data order, crops and flips, fixed by a data seed) and keeps its logits, and its
pooled penultimate features where a term needs them (RKD, CRD); students read them
memory-mapped and never run the teacher. Like the fast-KD framework (Shen & Xing, ECCV
2022), which stores a teacher's soft labels per augmented view, it can keep only the top-k
logits of each row (see `rebuild_logits` for the rest).

One store folder per process (under torchrun rank r of w uses DIR/rank{r}-of-{w}):

    header.json       what it was made for (teacher, data, augmentation, epochs) and its arrays
    logits.npy        (E, R, C) the teacher's logits, R rows an epoch in batch order; or, top-k:
    topk_logits.npy   (E, R, K) and topk_index.npy (E, R, K) and rest.npy (E, R)
    features.npy      (E, R, D) pooled penultimate features, where kept
    index.npy         (E, R) each row's data set index, checked against the batches read
    progress.json     batches written so far: a killed write continues from there
    complete.json     written last, atomically (with the files' sizes): only then is it read
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from icckd_cli.base.atomic import write_text_atomic
from icckd_cli.base.errors import INTERRUPTED, IcckdError, UsageError
from icckd_cli.data import Batch, Dataset, DataSpec
from icckd_cli.training import distributed as dist
from icckd_cli.training.engine import Callback, autocast
from icckd_cli.training.rundir import stop_on_signals

if TYPE_CHECKING:
    from icckd_cli.settings.config import DistillConfig

FORMAT_VERSION = 1
HEADER, PROGRESS, COMPLETE = "header.json", "progress.json", "complete.json"
SAVE_EVERY = 64  # batches between progress records while writing
GB = 1e9
TeacherFn = Callable[[Batch, int], tuple[Tensor, Tensor | None]]


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


# ----------------------------------------------------------------------------- checks


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or None when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


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
            raise UsageError(
                f"teacher cache {folder} was made for another run: its {group} differs "
                f"({'; '.join(diffs)}); use another --teacher-cache folder, or delete {folder} "
                "to rebuild it"
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


def _damaged(folder: Path, path: Path, why: str) -> IcckdError:
    return IcckdError(
        f"teacher cache file {path} is damaged ({why}); delete {folder} to rebuild the store"
    )


def _open(folder: Path, layout: Layout, sizes: dict[str, int] | None, mode: str) -> dict:
    """The store's arrays memory-mapped; a missing or mis-shaped file is an error naming it."""
    arrays = {}
    for stem, (shape, dtype) in layout.arrays().items():
        path = folder / f"{stem}.npy"
        if not path.is_file():
            raise _damaged(folder, path, "missing")
        if sizes is not None and path.stat().st_size != sizes.get(stem):
            raise _damaged(folder, path, f"{path.stat().st_size} bytes, not {sizes.get(stem)}")
        try:
            arr = np.load(path, mmap_mode=mode)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else "unreadable"
            raise _damaged(folder, path, why) from None
        if arr.shape != shape or arr.dtype != np.dtype(dtype):
            raise _damaged(folder, path, f"shape {arr.shape} {arr.dtype}, not {shape} {dtype}")
        arrays[stem] = arr
    return arrays


def status(folder: Path) -> str:
    """complete, partial (a header, no completion marker) or absent."""
    if (folder / COMPLETE).is_file():
        return "complete"
    return "partial" if (folder / HEADER).is_file() else "absent"


# ----------------------------------------------------------------------------- writing


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


def _save_progress(folder: Path, arrays: dict[str, Any], done: int) -> None:
    """Flush the arrays, then record how many batches they hold."""
    for arr in arrays.values():
        arr.flush()
    write_text_atomic(folder / PROGRESS, json.dumps({"batches": done}) + "\n")


def _fresh(folder: Path, layout: Layout, ident: dict[str, Any], limit_gb: float) -> dict:
    """A new store: size checks, then empty arrays, then the header."""
    need = layout.nbytes()
    if need > limit_gb * GB:
        raise UsageError(
            f"the teacher cache {folder} would take {need / GB:.3g} GB, more than "
            f"--teacher-cache-limit-gb {limit_gb:g}; keep fewer logits (--teacher-cache-topk K), "
            "raise the limit, or distill without the cache"
        )
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
    """
    folder = Path(folder)
    header = _read_json(folder / HEADER)
    state = status(folder)
    if state == "complete":
        if header is None:
            raise _damaged(folder, folder / HEADER, "unreadable")
        check_match(folder, header, ident, layout)
        return
    arrays: dict | None = None
    done = 0
    if header is not None:
        check_match(folder, header, ident, layout)
        layout = Layout(**header["layout"])  # keep what it holds (embeddings)
        try:
            arrays = _open(folder, layout, None, "r+")
            done = int((_read_json(folder / PROGRESS) or {}).get("batches", 0))
        except IcckdError:  # killed while creating its files: start again
            arrays = None
    total = layout.epochs * layout.steps
    action = "resume" if arrays is not None and done else "write"
    if arrays is None:
        arrays = _fresh(folder, layout, ident, limit_gb)
        done = 0
    info = {"path": str(folder), "bytes": layout.nbytes(), "done": done, "total": total}
    callback("teacher_cache", {"action": action, **info, "dtype": layout.dtype})
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
                _save_progress(folder, arrays, done)
            if stop_requested():
                _save_progress(folder, arrays, done)
                raise IcckdError(
                    f"interrupted while writing the teacher cache {folder} ({done} of {total} "
                    "batches kept); run the same command again to continue it",
                    INTERRUPTED,
                )
    _save_progress(folder, arrays, done)
    sizes = {stem: (folder / f"{stem}.npy").stat().st_size for stem in arrays}
    del arrays
    write_text_atomic(folder / COMPLETE, json.dumps({"batches": done, "sizes": sizes}) + "\n")


# ----------------------------------------------------------------------------- reading


class StoreReader:
    """A TeacherSource reading a complete store: (logits (B, C), features (B, D) or None)."""

    def __init__(self, folder: Path, layout: Layout, sizes: dict[str, int], device: Any) -> None:
        self.folder, self.layout, self.device = Path(folder), layout, device
        self.arrays = _open(self.folder, layout, sizes, "r")
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
    """A complete store that matches the run, ready to read; never a half-written one."""
    folder = Path(folder)
    if status(folder) != "complete":
        raise IcckdError(
            f"teacher cache {folder} is not complete (its writing was stopped); run the same "
            "command again to finish it"
        )
    header = _read_json(folder / HEADER)
    if header is None:
        raise _damaged(folder, folder / HEADER, "unreadable")
    check_match(folder, header, ident, layout)
    done = _read_json(folder / COMPLETE)
    if done is None or not isinstance(done.get("sizes"), dict):
        raise _damaged(folder, folder / COMPLETE, "unreadable")
    return StoreReader(folder, Layout(**header["layout"]), done["sizes"], device)


# ----------------------------------------------------------------------------- a run's store


def cached_teacher(
    cfg: DistillConfig,
    loader: Any,
    data: Dataset,
    teacher: nn.Module,
    info: dict[str, Any],
    on_device: Callable[[], TeacherFn],
    device: torch.device,
    callback: Callback,
) -> StoreReader:
    """The store of a distill run (--teacher-cache): written first where it is not complete.

    `info` is what the student records of its teacher (its sha256); the store's use joins it.
    """
    folder = shard_folder(Path(cfg.teacher_cache or "."), dist.rank(), dist.world_size())
    ident = identity(info["sha256"], data.spec, data.train, cfg.train_per_class, loader, cfg.epochs)
    topk = cfg.teacher_cache_topk
    if topk is not None and topk >= data.spec.num_classes:
        raise UsageError(
            f"--teacher-cache-topk {topk} keeps every one of the {data.spec.num_classes} "
            "classes; give fewer, or drop the option to keep all logits"
        )
    steps = len(loader)
    layout = Layout(
        epochs=cfg.epochs,
        steps=steps,
        rows=rows_per_epoch(len(data.train), dist.world_size(), cfg.batch_size, steps),
        batch_size=cfg.batch_size,
        classes=data.spec.num_classes,
        feature_dim=int(getattr(teacher, "feature_dim", 0)),
        dtype=cfg.teacher_cache_dtype,
        topk=topk,
        embeddings=cfg.cache_embeddings(cfg.resolved_weights()),
    )
    shown = callback if dist.is_main() else (lambda event, info: None)
    if status(folder) != "complete":
        with stop_on_signals() as flag:
            ensure_store(
                folder,
                ident,
                layout,
                on_device(),
                loader,
                device=device,
                precision=cfg.precision,
                limit_gb=cfg.teacher_cache_limit_gb,
                callback=shown,
                stop_requested=lambda: flag[0],
            )
        teacher.to("cpu")  # the students' steps never run it
    reader = open_store(folder, ident, layout, device)
    shown("teacher_cache", {"action": "read", "path": str(folder), "bytes": layout.nbytes()})
    info["cache"] = {
        "path": str(Path(folder).resolve()),
        "dtype": reader.layout.dtype,
        "topk": reader.layout.topk,
    }
    return reader
