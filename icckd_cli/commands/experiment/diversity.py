"""The teachers' soft-label diversity on the test split, measured once per finished run.

The figures are kept beside each teacher's checkpoint (diversity.json) with the
temperature and the checkpoint's time stamp, so a later `icckd experiment` reads them
rather than measuring again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from icckd_cli.base.events import Callback
from icckd_cli.commands.experiment.plan import Experiment, Run

DIVERSITY_FILE = "diversity.json"


def measure_diversity(exp: Experiment, callback: Callback) -> dict[str, dict[int, dict]]:
    """Soft-label statistics of every finished teacher on the test split, cached per run."""
    from icckd_cli.commands.inspect import inspect_checkpoints
    from icckd_cli.settings.config import InspectConfig
    from icckd_cli.training.rundir import MODEL_FILE

    temperature = exp.options.temperature
    found: dict[str, dict[int, dict]] = {t.name: {} for t in exp.teachers}
    todo: list[Run] = []
    for run in (r for r in exp.runs if r.kind == "teacher" and r.status() == "done"):
        stamp = (run.out / MODEL_FILE).stat().st_mtime_ns
        cached = _read_json(run.out / DIVERSITY_FILE)
        if cached.get("temperature") == temperature and cached.get("model_mtime_ns") == stamp:
            found[run.teacher][run.seed] = cached["overall"]  # type: ignore[index]
        else:
            todo.append(run)
    if todo:
        callback("diversity", {"count": len(todo)})
        cfg = InspectConfig.model_validate(
            {
                "checkpoints": [r.out / MODEL_FILE for r in todo],
                "temperature": temperature,
                "device": exp.options.device,
                "download": exp.options.download,
            }
        )
        for run, res in zip(todo, inspect_checkpoints(cfg), strict=True):
            overall = {k: _finite(v) for k, v in res.stats.overall.items()}
            stamp = (run.out / MODEL_FILE).stat().st_mtime_ns
            record = {
                "temperature": temperature,
                "split": "test",
                "model_mtime_ns": stamp,
                "overall": overall,
            }
            _write_json(run.out / DIVERSITY_FILE, record)
            found[run.teacher][run.seed] = overall  # type: ignore[index]
    return found


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, obj: Any) -> None:
    from icckd_cli.base.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
