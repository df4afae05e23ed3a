"""The work behind `icckd inspect-softlabels`: stream a split through each checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icckd_cli.commands.evaluation import checkpoint_channels_last, open_checkpoint
from icckd_cli.metrics.softlabels import SoftLabelAccumulator, SoftLabelStats
from icckd_cli.settings.config import InspectConfig
from icckd_cli.training.engine import predict


@dataclass
class Inspected:
    """One checkpoint's soft-label statistics and what it is."""

    path: Path
    name: str
    arch: str
    kind: str
    objective: dict[str, Any]
    classes: list[str]
    stats: SoftLabelStats

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "checkpoint": str(self.path),
            "name": self.name,
            "arch": self.arch,
            "kind": self.kind,
            "objective": self.objective,
            "classes": self.classes,
            **self.stats.to_dict(),
        }


def short_names(paths: list[Path]) -> list[str]:
    """Column titles: the shortest end of each path that no other path ends with.

    OUT/model.safetensors ends in its run folder's name, any other file in its stem:
    runs/ce/seed0/model.safetensors and runs/icc/seed0/model.safetensors are ce/seed0 and
    icc/seed0. A file named twice keeps its whole path.
    """
    ends = [p.parts[:-1] if p.stem == "model" and p.parent.name else (*p.parts[:-1], p.stem)
            for p in map(Path, paths)]  # fmt: skip
    names = []
    for i, (path, end) in enumerate(zip(paths, ends, strict=True)):
        others = [e for j, e in enumerate(ends) if j != i]
        k = next((k for k in range(1, len(end) + 1) if all(e[-k:] != end[-k:] for e in others)), 0)
        names.append(str(Path(*end[-k:])) if k else str(path))
    return names


def inspect_checkpoints(cfg: InspectConfig) -> list[Inspected]:
    """Soft-label statistics of every checkpoint on the configured split."""
    results = []
    for path, name in zip(cfg.checkpoints, short_names(cfg.checkpoints), strict=True):
        model, meta, data, device = open_checkpoint(
            path, cfg.dataset, cfg.data_dir, cfg.download, cfg.device
        )
        cl = checkpoint_channels_last(meta, device)
        acc = SoftLabelAccumulator(data.spec.num_classes, model.feature_dim, cfg.temperature)
        split = data.test if cfg.split == "test" else data.train
        for logits, feats, labels in predict(model, split, data.spec, cfg.batch_size, cl):
            acc.update(logits, feats, labels)
        results.append(
            Inspected(
                path,
                name,
                model.arch,
                meta.get("kind", "pth"),
                meta.get("objective") or {},
                list(data.spec.classes),
                acc.compute(),
            )
        )
    return results
