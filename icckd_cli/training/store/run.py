"""A distill run's teacher-output store (--teacher-cache): written first, then read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from icckd_cli.base.errors import UsageError
from icckd_cli.data import Dataset
from icckd_cli.training import distributed as dist
from icckd_cli.training.engine import Callback
from icckd_cli.training.rundir import stop_on_signals
from icckd_cli.training.store.format import Layout, identity, rows_per_epoch, shard_folder, status
from icckd_cli.training.store.reader import StoreReader, open_store
from icckd_cli.training.store.writer import TeacherFn, ensure_store

if TYPE_CHECKING:
    import torch

    from icckd_cli.settings.config import DistillConfig


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
