"""The tune file: [tune], [teacher], [student], [space.teacher], [space.student], validated.

Every check runs before any work: unknown tables and keys, a key that is no setting of the
command it is searched for, a range with low >= high, an empty space, and every edge of every
range (and every choice) validated as the setting it feeds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from icckd_cli.base.errors import UsageError, suggest

# settings every trial shares live in [tune] only, as an experiment's in [experiment]
from icckd_cli.commands.experiment.config import ROLE_SHARED, SHARED
from icckd_cli.settings.config import (
    DistillConfig,
    TrainTeacherConfig,
    check_tables,
    describe_problem,
    first_problem,
    in_table,
    read_table,
    read_toml,
)
from icckd_cli.settings.executor import ExecutorConfig, parse_executor
from icckd_cli.settings.tune import Param, TuneOptions

TABLES = ("tune", "teacher", "student", "space", "executor")
ROLES = ("teacher", "student")
MANAGED = {
    "out": "trials run in OUT/trials/NNNN/teacher and OUT/trials/NNNN/student",
    "overwrite": "every trial has a folder of its own",
    "teacher": "each trial's student distils from that trial's teacher",
    "teacher_arch": "the trial's teacher records its architecture",
    "teacher_model_args": "the trial's teacher records its builder arguments",
    "teacher_cache": "each trial's student runs its own teacher",
}
MODELS: dict[str, type[BaseModel]] = {"teacher": TrainTeacherConfig, "student": DistillConfig}
VAL_REFUSAL = (
    "tuning needs a validation split (val_per_class or val_fraction in [tune]); choosing on "
    "the test split would choose on the numbers it reports"
)


@dataclass
class TuneFile:
    """A validated tune file: the shared data, the fixed settings and the searched space."""

    options: TuneOptions
    given: dict[str, Any]  # [tune] as written (the data keys feed best-teacher.toml)
    fixed: dict[str, dict[str, Any]]  # role -> its table as written
    space: dict[str, dict[str, Param]]  # role -> setting -> how it is searched
    source: str
    # where the workers run: this process, local worker processes, Slurm jobs
    executor: ExecutorConfig = field(default_factory=lambda: ExecutorConfig.model_validate({}))

    @property
    def roles(self) -> tuple[str, ...]:
        """The runs of a trial: the teacher, and the student where it is the target."""
        return ROLES if self.options.target == "student" else ("teacher",)

    def shared(self) -> dict[str, Any]:
        """The [tune] values every run of a trial takes."""
        return {k: getattr(self.options, k) for k in SHARED}

    def config(self, role: str, params: Mapping[str, Any], **managed: Any) -> Any:
        """The run settings of `role` in a trial: shared, fixed, searched, then managed."""
        values = {**self.shared(), **self.fixed[role], **params, **managed}
        return MODELS[role](**values)

    def data_keys(self) -> dict[str, Any]:
        """The data, device and tensorboard keys of [tune] as written."""
        return {k: v for k, v in self.given.items() if k in SHARED}

    def fingerprint(self) -> str:
        """What makes two files one study: the target and the searched space."""
        space = {r: {k: p.describe() for k, p in ps.items()} for r, ps in self.space.items()}
        text = json.dumps({"target": self.options.target, "space": space}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_tune(
    path: Path,
    overrides: Mapping[str, Any] | None = None,
    executor: Mapping[str, Any] | None = None,
) -> TuneFile:
    """Read and validate a tune file; overrides (out, n_trials, ...) replace [tune]'s,
    executor (kind, workers) [executor]'s."""
    if not Path(path).is_file():
        raise UsageError(f"tune file {path} does not exist; check the path")
    return parse_tune(read_toml(Path(path)), str(path), overrides, executor)


def parse_tune(
    raw: dict[str, Any],
    source: str,
    overrides: Mapping[str, Any] | None = None,
    executor: Mapping[str, Any] | None = None,
) -> TuneFile:
    """Validate a whole tune file; one-line errors name the table."""
    check_tables(raw, TABLES, source)
    if "tune" not in raw:
        raise UsageError(
            f"{source}: the [tune] table is missing; add one with the data set and a validation "
            'split, e.g. [tune] dataset = "digits", val_per_class = 5 (see docs/tuning.md)'
        )
    placement = parse_executor(read_table(raw, "executor", source), executor or {}, source)
    given = read_table(raw, "tune", source)
    options_given = {k: v for k, v in (overrides or {}).items() if v is not None}
    given.update(options_given)
    options = _validate(TuneOptions, given, source, "[tune]", options_given)
    if options.val_per_class is None and options.val_fraction is None:
        raise UsageError(VAL_REFUSAL)
    roles = ROLES if options.target == "student" else ("teacher",)
    space_raw = read_table(raw, "space", source)
    check_tables(space_raw, ROLES, source, "space.", " Use [space.teacher] or [space.student].")
    if options.target == "teacher" and space_raw.get("student"):
        raise UsageError(
            f'{source}: [space.student] is searched but target = "teacher" trains no student; '
            'set target = "student" in [tune] or drop [space.student]'
        )
    fixed = {role: read_table(raw, role, source) for role in ROLES}
    space: dict[str, dict[str, Param]] = {}
    for role in ROLES:
        allowed = [k for k in MODELS[role].model_fields if k not in SHARED and k not in MANAGED]
        _check_keys(fixed[role], allowed, source, f"[{role}]", role)
        searched = read_table(space_raw, role, source, f"space.{role}")
        where = f"[space.{role}]"
        _check_keys(searched, [k for k in allowed if k != "seed"], source, where, role)
        space[role] = {k: _param(v, source, where, k) for k, v in searched.items()}
        for key in space[role]:
            if key in fixed[role]:
                raise UsageError(
                    f"{source}: '{key}' is fixed in [{role}] and searched in {where}; keep one"
                )
    if not any(space[r] for r in roles):
        raise UsageError(
            f"{source}: the search space is empty; add ranges or choices under "
            + ("[space.teacher] or [space.student]" if len(roles) == 2 else "[space.teacher]")
            + ", e.g. margin = { low = -1.0, high = 0.9 }"
        )
    tune = TuneFile(options, given, fixed, space, source, placement)
    _check_values(tune)
    return tune


COMMANDS = {"teacher": "train-teacher", "student": "distill"}


def _check_keys(
    values: Mapping[str, Any], allowed: list[str], source: str, where: str, role: str
) -> None:
    other = "student" if role == "teacher" else "teacher"
    for key in values:
        if key in allowed or (key in ROLE_SHARED and not where.startswith("[space")):
            continue
        if key in SHARED:
            raise UsageError(
                f"{source}: {where}: '{key}' belongs in [tune] (every run of every trial uses "
                "the same data, device and tensorboard setting)"
            )
        if key in MANAGED:
            raise UsageError(f"{source}: {where}: '{key}' is set by the tuner; {MANAGED[key]}")
        if key == "seed":
            raise UsageError(
                f"{source}: {where}: 'seed' is not searched (a seed is no setting to choose); "
                "fix it in [teacher] or [student]"
            )
        if key in MODELS[other].model_fields:
            raise UsageError(
                f"{source}: {where}: '{key}' is a setting of {COMMANDS[other]}, not "
                f"{COMMANDS[role]}; put it under {where.replace(role, other)}"
            )
        hint = suggest(key, allowed) or " Check the spelling."
        raise UsageError(f"{source}: {where}: unknown key '{key}'.{hint}")


def _param(value: Any, source: str, where: str, key: str) -> Param:
    if isinstance(value, list):
        value = {"choices": value}
    if not isinstance(value, dict):
        raise UsageError(
            f"{source}: {where}: {key} = {value!r}: give a range {{ low = ..., high = ... }} "
            "or a list of choices [...]"
        )
    try:
        return Param(**value)
    except ValidationError as exc:
        problem = first_problem(exc)
        field = f" ({problem.field})" if problem.field else ""
        msg = problem.msg
        if problem.kind == "extra_forbidden":
            msg = "a range takes low, high, log and step; a list takes choices"
        raise UsageError(f"{source}: {where}: {key}{field}: {msg}") from None


def _validate(
    model: type[BaseModel],
    values: dict[str, Any],
    source: str,
    where: str,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """model(**values); a bad value given as a command-line option (--n-trials) is blamed on
    the option, one from the file on its table."""
    try:
        return model(**values)
    except ValidationError as exc:
        problem = first_problem(exc)
        if problem.kind == "extra_forbidden" and problem.field:
            hint = suggest(problem.field, model.model_fields) or " Check the spelling."
            raise UsageError(f"{source}: {where}: unknown key '{problem.field}'.{hint}") from None
        if problem.field in (options or {}):
            raise UsageError(describe_problem(problem)) from None
        raise UsageError(in_table(source, where, problem, values)) from None


def _check_values(tune: TuneFile) -> None:
    """Every run setting a trial can get validates: the fixed ones, and each searched value
    at the edges of its range (or each choice), the other searched ones at their lows."""
    teacher_file = Path("teacher.safetensors")  # a student's teacher, named only
    for role in tune.roles:
        managed = {"teacher": teacher_file} if role == "student" else {}
        base = {k: p.extremes()[0] for k, p in tune.space[role].items()}
        try:
            cfg = tune.config(role, base, **managed)
        except ValidationError as exc:
            raise _where(exc, tune, role) from None
        _check_arch(cfg.arch, tune.source, f"[{role}]")
        for key, param in tune.space[role].items():
            for value in param.extremes():
                try:
                    tune.config(role, {**base, key: value}, **managed)
                except ValidationError as exc:
                    raise _where(exc, tune, role, key) from None


def _where(exc: ValidationError, tune: TuneFile, role: str, key: str | None = None) -> UsageError:
    problem = first_problem(exc)
    name = problem.field or key
    if key is not None and name == key:
        return UsageError(
            f"{tune.source}: [space.{role}]: {key} reaches an invalid value: {problem.msg}"
        )
    table = "[tune]" if name in SHARED else f"[{role}]"
    return UsageError(f"{tune.source}: {table}: invalid {name}: {problem.msg}")


def _check_arch(arch: str, source: str, where: str) -> None:
    from icckd_cli.models import resolve_name

    try:
        resolve_name(arch)
    except UsageError as exc:
        raise UsageError(f"{source}: {where}: {exc.message}") from None
