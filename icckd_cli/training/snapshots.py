"""A teacher's weights at each evaluated epoch, beside its run: RUN/epochs/epoch-NNN.safetensors.

Accuracy-matched teachers (commands/experiment/matched/) distill from an earlier epoch than
the last, so a teacher run keeps one small checkpoint per evaluated epoch. Each is a full icckd
checkpoint (the run's metadata: kind, arch, classes, builder arguments, data set, config), so
it loads as a teacher with load_any_model, plus `extra.snapshot = {epoch, val_top1,
weights_sha256}`. Like every checkpoint it records the digest of its tensor data, checked when
it is read as a teacher; the weights' hash is checked there too
(commands/experiment/matched/snapshots.py). Written atomically: a reader never sees a
half-written snapshot, and of two writers at once one whole file wins.

Sizes per evaluated epoch, measured (float32 weights and buffers, 10 classes, plus a few kB of
metadata): resnet8 0.32 MB, resnet20 1.11 MB, resnet56 3.47 MB; saving one takes 50-80 ms on a
CPU (hash, write, fsync). A resnet56 evaluated at each of 240 epochs keeps 0.83 GB: use
eval_every, or clear_snapshots after matching, where space counts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from icckd_cli.base.checkpoint import read_metadata, save_model, weights_hash
from icckd_cli.base.errors import IcckdError

EPOCHS_DIR = "epochs"
NAME = re.compile(r"epoch-(\d{3,})\.safetensors")


@dataclass(frozen=True)
class Snapshot:
    """What a snapshot's header says: its file, epoch and validation top-1."""

    path: Path
    epoch: int
    val_top1: float
    weights_sha256: str


def snapshot_path(run_dir: Path, epoch: int) -> Path:
    """RUN/epochs/epoch-NNN.safetensors (three digits at least)."""
    return Path(run_dir) / EPOCHS_DIR / f"epoch-{epoch:03d}.safetensors"


def save_snapshot(
    run_dir: Path, epoch: int, model: nn.Module, val_top1: float, meta: dict[str, Any]
) -> Path:
    """Atomically keep `model`'s weights of `epoch` (1-based) with its validation top-1.

    `meta` is the run's checkpoint metadata (kind, arch, num_classes, model_args, dataset,
    config, seed, objective); `model` is the plain module (not DDP, not compiled).
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise IcckdError(f"a snapshot's epoch is a whole number >= 1 (got {epoch!r})")
    if not math.isfinite(val_top1):
        raise IcckdError(f"epoch {epoch} has a validation top-1 of {val_top1}; not kept")
    state = dict(model.state_dict())
    record = {"epoch": epoch, "val_top1": float(val_top1), "weights_sha256": weights_hash(state)}
    extra = {**(meta.get("extra") or {}), "snapshot": record}
    path = snapshot_path(run_dir, epoch)
    save_model(path, model, {**meta, "extra": extra})
    return path


def list_snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the snapshot files of a run, by epoch, from their names alone."""
    folder = Path(run_dir) / EPOCHS_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.fullmatch(p.name))]
    return sorted(found)


def read_snapshot(path: Path) -> Snapshot:
    """A snapshot's header (not its tensors); a damaged or foreign file refused in one line."""
    path = Path(path)
    record = _record(read_metadata(path))  # truncated, zeroed, random bytes: refused here
    try:
        if record is None:
            raise KeyError("snapshot")
        snap = Snapshot(
            path, int(record["epoch"]), float(record["val_top1"]), str(record["weights_sha256"])
        )
    except (TypeError, KeyError, ValueError):
        raise IcckdError(
            f"{path} is not an epoch snapshot (no epoch and validation top-1 in its metadata); "
            "remove it or rerun the teacher"
        ) from None
    named = NAME.fullmatch(path.name)
    if named is not None and int(named.group(1)) != snap.epoch:
        raise IcckdError(
            f"{path} holds epoch {snap.epoch}, not the epoch its name says; it was renamed: "
            f"name it {snapshot_path(path.parent.parent, snap.epoch).name} or rerun the teacher"
        )
    return snap


def snapshot_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(epoch, val_top1) of every snapshot of a run, by epoch: the curve matching reads."""
    return [(e, read_snapshot(p).val_top1) for e, p in list_snapshots(run_dir)]


def _record(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The `extra.snapshot` record of a checkpoint's metadata, if it has one."""
    extra = meta.get("extra")
    record = extra.get("snapshot") if isinstance(extra, dict) else None
    return record if isinstance(record, dict) else None


def snapshot_epoch(meta: dict[str, Any]) -> dict[str, Any] | None:
    """{epoch, val_top1} of a checkpoint's metadata when it is a snapshot, else None."""
    record = _record(meta)
    if record is None:
        return None
    return {"epoch": record.get("epoch"), "val_top1": record.get("val_top1")}


def clear_snapshots(run_dir: Path, after: int = 0) -> int:
    """Remove the snapshots of epochs > `after` (a fresh start: 0; a resume: its epoch)."""
    gone = 0
    for epoch, path in list_snapshots(run_dir):
        if epoch > after:
            path.unlink(missing_ok=True)
            gone += 1
    return gone
