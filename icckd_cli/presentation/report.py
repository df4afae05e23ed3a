"""The names presentation offered from one module before it was split, for code that uses them.

New code imports the module that holds a name: `console` (consoles, one-line messages,
JSON), `lines` (the one-line texts of a run), `progress` and `experiment_progress` (the
progress views), `tables` and `softlabel_tables` (what commands print when done).
"""

from __future__ import annotations

from icckd_cli.base.units import size_text
from icckd_cli.presentation.console import err, error, fmt, note, out, print_json, warning
from icckd_cli.presentation.experiment_progress import ExperimentProgress
from icckd_cli.presentation.lines import (
    LOSS_ORDER,
    SHORT,
    best_phrase,
    epoch_line,
    recipe_line,
    teacher_cache_line,
)
from icckd_cli.presentation.progress import DownloadProgress, TrainingProgress, progress_bar
from icckd_cli.presentation.softlabel_tables import (
    SUMMARY_ROWS,
    softlabel_per_class,
    softlabel_summary,
)
from icckd_cli.presentation.tables import (
    best_rows,
    eval_table,
    experiment_plan,
    experiment_tables,
    export_table,
    fetched_table,
    key_value_table,
    models_table,
    run_summary,
)

__all__ = [
    "LOSS_ORDER",
    "SHORT",
    "SUMMARY_ROWS",
    "DownloadProgress",
    "ExperimentProgress",
    "TrainingProgress",
    "best_phrase",
    "best_rows",
    "epoch_line",
    "err",
    "error",
    "eval_table",
    "experiment_plan",
    "experiment_tables",
    "export_table",
    "fetched_table",
    "fmt",
    "key_value_table",
    "models_table",
    "note",
    "out",
    "print_json",
    "progress_bar",
    "recipe_line",
    "run_summary",
    "size_text",
    "softlabel_per_class",
    "softlabel_summary",
    "teacher_cache_line",
    "warning",
]
