"""What every command's settings share: strict models, builder arguments, TOML, one-line errors.

Precedence: command line > `--config FILE.toml` > the defaults of the models. Models are flat
so a TOML file uses the same names as the options (`icc_weight = 0.1` for `--icc-weight 0.1`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from icckd_cli.base.errors import UsageError, suggest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# builder arguments icckd sets itself: classes from the data set, weights from files only
RESERVED_MODEL_ARGS = {
    "num_classes": "the data set sets the number of classes",
    "pretrained": "icckd never downloads weights while building: use fetch-teacher or --init",
    "weights": "icckd never downloads weights while building: use fetch-teacher or --init",
}


def check_model_args(args: dict[str, Any], option: str) -> dict[str, Any]:
    """Builder arguments: identifier keys, scalar (or list) values, nothing icckd sets."""
    for key, value in args.items():
        if not key.isidentifier():
            raise ValueError(
                f"invalid value for {option} ({key!r}): give KEY=VALUE with a Python name as "
                f"KEY, e.g. {option} drop_path_rate=0.1"
            )
        if key in RESERVED_MODEL_ARGS:
            raise ValueError(
                f"invalid value for {option} ({key}={value!r}): {RESERVED_MODEL_ARGS[key]}"
            )
        items = value if isinstance(value, list) else [value]
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in items):
            raise ValueError(
                f"invalid value for {option} ({key}={value!r}): give a number, true/false, a "
                "string or a list of those"
            )
    return args


# keys of a run's config.json that record what was derived and are no settings
RECORDED_ONLY = ("recipe",)


def option_name(field: str) -> str:
    """The command-line spelling of a config field."""
    if field.endswith("model_args"):  # a table in TOML, a repeatable KEY=VALUE option
        field = field[:-1]
    return "--" + field.replace("_", "-")


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML config file as a dict, or a one-line error."""
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist; check the path given to --config")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML ({exc}); fix the file") from None


def check_tables(
    raw: Mapping[str, Any], tables: Sequence[str], source: str, prefix: str = "", hint: str = ""
) -> None:
    """A one-line error for the first table of a TOML file (or of its [prefix...] table)
    that is not one of `tables`; `hint` replaces the list of tables when nothing is close."""
    for key in raw:
        if key not in tables:
            why = suggest(key, tables) or hint or f" The tables are: {', '.join(tables)}."
            raise UsageError(f"{source}: unknown table [{prefix}{key}].{why}")


def read_table(raw: Mapping[str, Any], key: str, source: str, name: str = "") -> dict[str, Any]:
    """raw[key] as a fresh dict ({} when absent); a one-line error when it is no table.
    `name`: how the error names it (a sub-table's dotted name), `key` by default."""
    value = raw.get(key, {})
    if not isinstance(value, dict):
        name = name or key
        raise UsageError(f"{source}: [{name}] must be a table of settings (a [{name}] header)")
    return dict(value)


def build(
    model: type[_Strict],
    cli: dict[str, Any],
    config_file: Path | None = None,
    below: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Any:
    """Validate command line over config file over defaults into `model`.

    `below(values)`: defaults derived from the values given, under them (distill's data set
    recorded in its teacher), read once here rather than in a validator.
    """
    values: dict[str, Any] = read_toml(config_file) if config_file else {}
    for key, value in cli.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            value = {**values[key], **value}  # --model-arg adds to (or overrides) the file's
        if value is not None:
            values[key] = value
    if below is not None:
        values = {**below(values), **values}
    unknown = [k for k in values if k not in model.model_fields]
    if unknown:
        key = unknown[0]
        where = f"in {config_file}" if config_file and key not in cli else "given"
        if where != "given" and isinstance(values[key], dict):  # a [table]: another kind of file
            kind = "tune" if key in ("tune", "space") else "experiment"
            raise UsageError(
                f"config file {config_file} has a [{key}] table: it looks like "
                f"{'a' if kind == 'tune' else 'an'} {kind} file; run it with `icckd {kind} "
                f"{config_file}`, or give --config a file of this command's settings (KEY = "
                "VALUE lines, no tables)"
            )
        hint = suggest(key, model.model_fields)
        raise UsageError(f"unknown setting '{key}' {where}.{hint or ' Check the spelling.'}")
    try:
        return model(**values)
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc)) from None


@dataclass(frozen=True)
class Problem:
    """The first problem of a pydantic ValidationError, as every one-line message uses it."""

    field: str | None  # the setting it is about; None: the model as a whole
    msg: str  # pydantic's message without "Value error, "
    kind: str  # pydantic's error type: extra_forbidden, greater_than, ...
    value: Any  # the value given


# what each member of a union takes, where a value fits none of them
MEMBER_WORDS = {"int": "a number", "float": "a number", "bool": "true or false",
                "str": "a string"}  # fmt: skip


def first_problem(exc: ValidationError) -> Problem:
    """The first error of `exc`; for a union (int | float) one message for all its members,
    not the first member's ("a valid integer" of a value that may be a float)."""
    errors = exc.errors()
    err = errors[0]
    loc = tuple(err.get("loc", ()))
    names = [str(p) for p in loc if not isinstance(p, int)]
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    members = [
        str(e["loc"][-1]) for e in errors if loc and e.get("loc") and e["loc"][:-1] == loc[:-1]
    ]
    if len(members) > 1 and all(m in MEMBER_WORDS for m in members):
        words = list(dict.fromkeys(MEMBER_WORDS[m] for m in members))
        msg = "Input should be " + (", ".join(words[:-1]) + " or " if words[1:] else "") + words[-1]
    return Problem(names[0] if names else None, msg, str(err.get("type", "")), err.get("input"))


def in_table(source: str, where: str, problem: Problem, values: Mapping[str, Any]) -> str:
    """A problem of a TOML file's table: 'FILE: [table]: invalid key = value: why'."""
    if problem.field is None:
        return f"{source}: {where}: {problem.msg}"
    shown = f" = {values[problem.field]!r}" if problem.field in values else ""
    return f"{source}: {where}: invalid {problem.field}{shown}: {problem.msg}"


def describe_validation_error(exc: ValidationError) -> str:
    """The first validation problem as one line naming the option."""
    return describe_problem(first_problem(exc))


def describe_problem(problem: Problem) -> str:
    """A problem of a setting given on the command line, as one line naming the option."""
    msg = problem.msg
    if msg.startswith("invalid value for") or problem.field is None:
        # a validator's own message names the option
        return msg if msg.startswith("invalid value for") else f"invalid settings: {msg}"
    value = problem.value
    shown = f" ({value!r})" if value is not None and not isinstance(value, dict) else ""
    return f"invalid value for {option_name(problem.field)}{shown}: {msg}"
