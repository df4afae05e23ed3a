"""The two hooks of accuracy-matched teachers in a run (commands/runs.py, commands/teachers.py).

A teacher run whose config asks for it (`keep_snapshots`, set by `icckd experiment` when
`match_teachers = true`) keeps its weights at each evaluated epoch in RUN/epochs/ (see
training/snapshots.py for the sizes); a student distilled from such a snapshot records the
teacher's epoch, its validation top-1 and the file's sha256 beside the weights' hash.
Runs that ask for neither are untouched: no file, no metadata key, no extra work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from icckd_cli.base.checkpoint import Checkpoint
from icckd_cli.base.errors import IcckdError
from icckd_cli.settings.config import DataOptions
from icckd_cli.training.snapshots import clear_snapshots, save_snapshot, snapshot_epoch


class SnapshotKeeper:
    """Saves `model` at each evaluated epoch; a fresh start clears old ones, a resume later ones."""

    def __init__(self, out: Path, model: nn.Module, meta: dict[str, Any], resumed_at: int) -> None:
        self.out, self.model, self.meta = Path(out), model, meta
        clear_snapshots(self.out, resumed_at)  # epochs not (or no longer) in this run's history

    def epoch(self, info: dict[str, Any]) -> None:
        """The engine's per-epoch record: kept where it carries a validation top-1."""
        if info.get("val_top1") is not None:
            save_snapshot(self.out, int(info["epoch"]), self.model, info["val_top1"], self.meta)


def snapshot_keeper(
    cfg: DataOptions, out: Path, model: nn.Module, meta: dict[str, Any], resumed_at: int
) -> SnapshotKeeper:
    """The keeper of a run that asks for snapshots (a teacher of a matched experiment).

    `meta` is what the final checkpoint records, less its metrics; `model` the plain module.
    """
    if cfg.val_per_class is None and cfg.val_fraction is None:
        raise IcckdError(
            "keeping epoch snapshots needs a validation split (val_per_class or val_fraction)"
        )
    return SnapshotKeeper(out, model, meta, resumed_at)


def teacher_snapshot(ckpt: Checkpoint, weights_sha256: str) -> dict[str, Any]:
    """What a student records of a snapshot teacher: {} for any other teacher file.

    `weights_sha256` is the hash of the weights the teacher was loaded with; the file's
    sha256 comes from the bytes the checkpoint already read.
    """
    record = snapshot_epoch(ckpt.meta)
    if record is None:
        return {}
    recorded = (ckpt.extra.get("snapshot") or {}).get("weights_sha256")
    if recorded != weights_sha256:
        raise IcckdError(
            f"{ckpt.path}: its weights differ from those saved (the hash recorded in it does not "
            "match); it is damaged: delete it and rerun the teacher"
        )
    return {
        "epoch": record["epoch"],
        "val_top1": record["val_top1"],
        "file_sha256": ckpt.file_sha256,
    }
