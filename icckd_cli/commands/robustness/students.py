"""`[experiment] corruptions = true`: every finished student's top-1 under corruptions.

Each student checkpoint is evaluated once on the built-in suite (or corruptions_dir) and the
summary kept in its folder as corruptions.json, keyed to the model file's time, so a second
`icckd experiment` reads it back; experiment/transfer/measures.py turns the means into
answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

CORRUPTIONS_FILE = "corruptions.json"


class ExperimentRun(Protocol):
    """What is read of an experiment's run (experiment/plan.py's Run): kind, folder, status."""

    @property
    def kind(self) -> str: ...  # teacher, student or baseline

    @property
    def out(self) -> Path: ...

    def status(self) -> str: ...


def measure_corruptions(
    runs: Iterable[ExperimentRun], corruptions_dir: Path | None, download: bool, device: str
) -> int:
    """Evaluate the finished students not measured yet; how many were evaluated now."""
    # imported here: an experiment that measures no corruptions never loads them
    from icckd_cli.commands.evaluation import checkpoint_channels_last, open_checkpoint
    from icckd_cli.commands.robustness.scoring import corruption_metrics
    from icckd_cli.training.rundir import MODEL_FILE

    done = 0
    for run in (r for r in runs if r.kind == "student" and r.status() == "done"):
        model_file = run.out / MODEL_FILE
        stamp = model_file.stat().st_mtime_ns
        try:
            cached = json.loads((run.out / CORRUPTIONS_FILE).read_text())
        except (OSError, ValueError):
            cached = {}
        if cached.get("model_mtime_ns") == stamp:
            continue
        model, meta, data, dev = open_checkpoint(model_file, None, None, download, device)
        cl = checkpoint_channels_last(meta, dev)
        summary = corruption_metrics(model, data, dev, model_file, corruptions_dir, 512, cl)
        save_corruptions(run.out / CORRUPTIONS_FILE, summary, stamp)
        done += 1
    return done


def save_corruptions(path: Path, summary: Mapping[str, Any], stamp: int) -> None:
    """A run's corruption summary, keyed to its model file's time."""
    from icckd_cli.base.atomic import write_text_atomic

    write_text_atomic(path, json.dumps({**summary, "model_mtime_ns": stamp}, indent=2) + "\n")


def corruption_mean(run: ExperimentRun) -> float | None:
    """The mean corruption top-1 measure_corruptions recorded for a run; None if none."""
    try:
        return json.loads((run.out / CORRUPTIONS_FILE).read_text())["mean_top1"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
