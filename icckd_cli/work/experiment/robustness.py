"""`[experiment] corruptions = true`: every finished student's top-1 under corruptions.

Each student checkpoint is evaluated once on the built-in suite (or corruptions_dir) and the
summary kept in its folder as corruptions.json, keyed to the model file's time, so a second
`icckd experiment` reads it back; transfer.py turns the means into answers.
"""

from __future__ import annotations

import json
from typing import Any

from icckd_cli.work.experiment.config import Experiment
from icckd_cli.work.experiment.transfer import CORRUPTIONS_FILE, save_corruptions


def measure_corruptions(exp: Experiment, callback: Any) -> int:
    """Evaluate the students not measured yet; how many were evaluated now."""
    o = exp.options
    if not o.corruptions:
        return 0  # before the imports: a run that measures no corruptions never loads them
    from icckd_cli.training.rundir import MODEL_FILE
    from icckd_cli.work.eval_extra import corruption_metrics
    from icckd_cli.work.evaluation import checkpoint_channels_last, open_checkpoint

    done = 0
    for run in (r for r in exp.runs if r.kind == "student" and r.status() == "done"):
        model_file = run.out / MODEL_FILE
        stamp = model_file.stat().st_mtime_ns
        try:
            cached = json.loads((run.out / CORRUPTIONS_FILE).read_text())
        except (OSError, ValueError):
            cached = {}
        if cached.get("model_mtime_ns") == stamp:
            continue
        model, meta, data, dev = open_checkpoint(model_file, None, None, o.download, o.device)
        cl = checkpoint_channels_last(meta, dev)
        summary = corruption_metrics(model, data, dev, model_file, o.corruptions_dir, 512, cl)
        save_corruptions(run.out / CORRUPTIONS_FILE, summary, stamp)
        done += 1
    return done
