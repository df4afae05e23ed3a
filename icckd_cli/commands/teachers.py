"""The teacher of a distill run: its file opened, and what a step reads of it.

A step either runs the frozen teacher or (--teacher-cache) reads its teacher-output store,
written first where it is not complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from icckd_cli.base.checkpoint import weights_hash
from icckd_cli.base.errors import UsageError
from icckd_cli.commands.experiment.matched.snapshots import teacher_snapshot
from icckd_cli.commands.inputs import train_loader
from icckd_cli.data import Dataset
from icckd_cli.models import ZooModel
from icckd_cli.models.loading import open_any_model
from icckd_cli.settings.config import DistillConfig
from icckd_cli.training.engine import Callback, channels_last_on
from icckd_cli.training.objectives import DistillObjective
from icckd_cli.training.store import cached_teacher
from icckd_cli.training.teacher_source import RunTeacher, TeacherSource


def load_teacher(cfg: DistillConfig) -> tuple[ZooModel, dict[str, Any], dict[str, Any]]:
    """The frozen teacher, its metadata, and what the student records of it."""
    if cfg.teacher is None:
        raise UsageError("distill needs a teacher: pass --teacher T.safetensors (or T.pth)")
    teacher, ckpt = open_any_model(
        cfg.teacher, cfg.teacher_arch, option="--teacher-arch", model_args=cfg.teacher_model_args
    )  # the file read once: its header, verified tensors and hashes come from those bytes
    meta = ckpt.meta if ckpt is not None and ckpt.is_icckd else {}
    if meta and cfg.teacher_model_args:
        raise UsageError(
            f"{cfg.teacher} records the builder arguments of its model; drop "
            "--teacher-model-arg (it is for weights files without icckd metadata)"
        )
    info = {
        "path": str(Path(cfg.teacher).resolve()),
        "sha256": weights_hash(teacher.state_dict()),
        "arch": teacher.arch,
        "model_args": teacher.model_args,
        "kind": meta.get("kind", "pth"),
        "objective": meta.get("objective"),
        "metrics": meta.get("metrics"),
    }
    if ckpt is not None and ckpt.is_icckd:
        info.update(teacher_snapshot(ckpt, info["sha256"]))
    return teacher, meta, info


def teacher_source(
    cfg: DistillConfig,
    teacher: ZooModel,
    info: dict[str, Any],
    data: Dataset,
    device: torch.device,
    callback: Callback,
) -> TeacherSource:
    """The teacher run each step, or (--teacher-cache) its store: written first if need be."""
    channels_last = channels_last_on(device, cfg.channels_last)

    def on_device() -> RunTeacher:
        moved = teacher.to(device)
        return RunTeacher(moved.to(memory_format=torch.channels_last) if channels_last else moved)

    if cfg.teacher_cache is None:
        return on_device()

    loader = train_loader(cfg, data, DistillObjective.views, channels_last)
    return cached_teacher(cfg, loader, data, teacher, info, on_device, device, callback)
