"""The experiment file: [experiment], [teacher]/[[teachers]], [student]/[[students]], validated.

Everything is checked before any work starts; an error names the table (and the entry) the
bad value came from. What a valid file becomes, and its runs' folders, is plan.py's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from icckd_cli.base.errors import UsageError, suggest
from icckd_cli.commands.experiment.matched.rule import check_match_split
from icckd_cli.commands.experiment.plan import (
    Experiment,
    ExperimentOptions,
    Student,
    Teacher,
)
from icckd_cli.models import resolve_name
from icckd_cli.settings.config import (
    DataOptions,
    DistillConfig,
    TrainTeacherConfig,
    check_tables,
    first_problem,
    in_table,
    read_table,
    read_toml,
)
from icckd_cli.settings.executor import parse_executor

TABLES = ("experiment", "teacher", "teachers", "student", "students", "executor")
# Settings every run of an experiment shares: they live in [experiment] only...
SHARED = (*DataOptions.model_fields, "device", "tensorboard")
# ...except these, which [teacher] (for the teachers) and [student] (for the students and
# the student alone) may set for their role; [experiment]'s value is the default of both.
ROLE_SHARED = ("train_per_class",)
# Settings the experiment sets per run.
MANAGED = {
    "seed": "use seeds = [...] in [experiment]",
    "out": "runs go under out of [experiment]",
    "overwrite": "delete a run folder to redo it",
    "teacher": "every student distills from every [[teachers]] entry",
    "teacher_arch": "the teachers record their architecture",
    "teacher_model_args": "the teachers record their builder arguments",
    "data_seed": "students sharing a teacher cache use its teacher's seed, others their own",
    "teacher_cache": "use teacher_cache = true or false in [experiment]",
    "keep_snapshots": "use match_teachers = true in [experiment]",
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# ----------------------------------------------------------------------------- validation


def load_experiment(
    path: Path,
    overrides: Mapping[str, Any] | None = None,
    executor: Mapping[str, Any] | None = None,
) -> Experiment:
    """Read and validate an experiment file; overrides (out, device, ...) replace [experiment],
    executor (kind, workers) [executor]."""
    if not Path(path).is_file():
        raise UsageError(
            f"experiment file {path} does not exist; check the path (examples/ holds "
            "ready-made ones)"
        )
    exp = parse_experiment(read_toml(Path(path)), str(path), overrides, executor)
    exp.command = f"icckd experiment {path}"
    return exp


def parse_experiment(
    raw: dict[str, Any],
    source: str,
    overrides: Mapping[str, Any] | None = None,
    executor: Mapping[str, Any] | None = None,
) -> Experiment:
    """Validate the whole experiment before any work starts; one-line errors name the table."""
    check_tables(raw, TABLES, source)
    placement = parse_executor(read_table(raw, "executor", source), executor or {}, source)
    exp_raw = read_table(raw, "experiment", source)
    exp_raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    options = _validate(ExperimentOptions, exp_raw, {}, source, "[experiment]", "[experiment]")
    check_match_split(options.match_teachers, options.val_per_class, options.val_fraction)
    shared = {k: getattr(options, k) for k in SHARED}
    teachers = [Teacher(*e) for e in _section(raw, "teacher", TrainTeacherConfig, shared, source)]
    if not teachers:
        raise UsageError(
            f'{source}: no teachers; add [[teachers]] entries, e.g. name = "ce" with '
            'icc_weight = 0 and name = "icc" with icc_weight = 0.05'
        )
    raw = {**raw, "student": read_table(raw, "student", source)}
    baseline_wanted = raw["student"].pop("baseline", False)
    if not isinstance(baseline_wanted, bool):
        raise UsageError(f"{source}: [student]: baseline must be true or false")
    students = [Student(*e) for e in _section(raw, "student", DistillConfig, shared, source)]
    baseline = None
    if baseline_wanted:
        values = {**shared, **raw["student"]}
        recipe = _validate(DistillConfig, values, {}, source, "[student]", "", raw["student"])
        # the student's data, optimiser and run settings, without any distillation term
        common = [k for k in TrainTeacherConfig.model_fields if k in DistillConfig.model_fields]
        values = {k: getattr(recipe, k) for k in common}
        if recipe.labels_per_class is not None:  # alone, it has only the labelled images
            limit = recipe.train_per_class or recipe.labels_per_class
            values["train_per_class"] = min(recipe.labels_per_class, limit)
        baseline = TrainTeacherConfig(**values, icc_weight=0.0)
    return Experiment(options, teachers, students, baseline, source, executor=placement)


def _section(
    raw: dict[str, Any], key: str, model: type[BaseModel], shared: dict[str, Any], source: str
) -> list[tuple[str, Any]]:
    """(name, config) of each [[<key>s]] entry over the [<key>] table over the defaults."""
    allowed = [k for k in model.model_fields if k not in SHARED and k not in MANAGED]
    common = read_table(raw, key, source)
    _check_keys(common, allowed, source, f"[{key}]", ROLE_SHARED)
    out = []
    for i, entry in enumerate(_entries(raw, f"{key}s", source)):
        if key == "student":  # a student is named after its method unless named
            entry = {"name": entry.get("method", common.get("method", "kd")), **entry}
        name, where = _entry_name(entry, f"{key}s", i, source)
        _check_keys(entry, allowed, source, where, ("name",), role=key)
        values = {**shared, **common, **{k: v for k, v in entry.items() if k != "name"}}
        out.append((name, _validate(model, values, entry, source, where, f"[{key}]", common)))
    _unique([name for name, _ in out], source, f"[[{key}s]]")
    return out


def _entries(raw: dict[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise UsageError(
            f"{source}: write one [[{key}]] header per entry (an array of tables), not [{key}]"
        )
    return [dict(v) for v in value]


def _entry_name(entry: dict[str, Any], key: str, i: int, source: str) -> tuple[str, str]:
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        example = "icc" if key == "teachers" else "kd"
        raise UsageError(
            f"{source}: [[{key}]] entry {i + 1} needs a name of letters, digits, '_', '-', "
            f"'+' or '.' (it names its folder), e.g. name = \"{example}\""
        )
    return name, f"[[{key}]] '{name}'"


def _check_keys(
    values: dict[str, Any],
    allowed: list[str],
    source: str,
    where: str,
    extra: tuple = (),
    role: str = "",
) -> None:
    for key in values:
        if key in allowed or key in extra:
            continue
        if key in ROLE_SHARED:  # in an entry: every teacher (student) sees the same images
            raise UsageError(
                f"{source}: {where}: '{key}' belongs in [{role}] or [experiment] (every "
                f"{role} of an experiment trains on the same images)"
            )
        if key in ("val_per_class", "val_fraction"):
            raise UsageError(
                f"{source}: {where}: '{key}' belongs in [experiment] (every run of an "
                "experiment must pick its best epoch on the same validation images)"
            )
        if key == "test_per_class":
            raise UsageError(
                f"{source}: {where}: 'test_per_class' belongs in [experiment] (runs that are "
                "compared must be evaluated on the same test images)"
            )
        if key in SHARED:
            raise UsageError(
                f"{source}: {where}: '{key}' belongs in [experiment] (every run of an experiment "
                "uses the same data, device and tensorboard setting)"
            )
        if key in MANAGED:
            raise UsageError(f"{source}: {where}: '{key}' is set by the experiment; {MANAGED[key]}")
        hint = suggest(key, [*allowed, *extra]) or " Check the spelling."
        raise UsageError(f"{source}: {where}: unknown key '{key}'.{hint}")


def _validate(
    model: type,
    values: dict[str, Any],
    entry: dict[str, Any],
    source: str,
    where: str,
    shared: str,
    common: Mapping[str, Any] | None = None,
) -> Any:
    """model(**values), or a one-line error naming the table the bad value came from."""
    try:
        cfg = model(**values)
    except ValidationError as exc:
        problem = first_problem(exc)
        key = problem.field
        table = where if key is None or key in entry or not shared else shared
        if key in SHARED and key not in (common or {}) and model is not ExperimentOptions:
            table = "[experiment]"
        raise UsageError(in_table(source, table, problem, values)) from None
    if "arch" in getattr(model, "model_fields", {}):
        try:
            resolve_name(cfg.arch)
        except UsageError as exc:
            raise UsageError(f"{source}: {where}: {exc.message}") from None
    return cfg


def _unique(names: list[str], source: str, where: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"{source}: {where}: the name '{dup[0]}' is used twice; names must differ")
