"""Pydantic settings, one model per command; every default lives in these models.

Precedence: command line > `--config FILE.toml` > the defaults. Models are flat so a TOML file
uses the same names as the options (`icc_weight = 0.1` for `--icc-weight 0.1`). The models
live in modules by what they hold (common, data, optim, run, train, commands); this module is
where the rest of the package imports them from.
"""

from __future__ import annotations

from icckd_cli.settings.commands import (
    EvalConfig,
    ExportConfig,
    FetchConfig,
    InspectConfig,
    PlotConfig,
)
from icckd_cli.settings.common import (
    RECORDED_ONLY,
    RESERVED_MODEL_ARGS,
    _Strict,
    build,
    check_model_args,
    check_tables,
    describe_problem,
    describe_validation_error,
    first_problem,
    in_table,
    option_name,
    read_table,
    read_toml,
)
from icckd_cli.settings.data import DataOptions, teacher_data
from icckd_cli.settings.optim import OptimOptions
from icckd_cli.settings.run import RunOptions
from icckd_cli.settings.train import (
    METHOD_PRESETS,
    DistillConfig,
    Method,
    RunConfig,
    RunSettings,
    StudentLoss,
    TeacherCacheOptions,
    TeacherLoss,
    TrainTeacherConfig,
)

__all__ = [
    "METHOD_PRESETS",
    "RECORDED_ONLY",
    "RESERVED_MODEL_ARGS",
    "DataOptions",
    "DistillConfig",
    "EvalConfig",
    "ExportConfig",
    "FetchConfig",
    "InspectConfig",
    "Method",
    "OptimOptions",
    "PlotConfig",
    "RunConfig",
    "RunOptions",
    "RunSettings",
    "StudentLoss",
    "TeacherCacheOptions",
    "TeacherLoss",
    "TrainTeacherConfig",
    "_Strict",
    "build",
    "check_model_args",
    "check_tables",
    "describe_problem",
    "describe_validation_error",
    "first_problem",
    "in_table",
    "option_name",
    "read_table",
    "read_toml",
    "teacher_data",
]
