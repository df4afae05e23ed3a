"""What every command's settings share: strict models, builder arguments, TOML, one-line errors.

Precedence: command line > `--config FILE.toml` > the defaults of the models. Models are flat
so a TOML file uses the same names as the options (`icc_weight = 0.1` for `--icc-weight 0.1`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
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


def build(model: type[_Strict], cli: dict[str, Any], config_file: Path | None = None) -> Any:
    """Validate command line over config file over defaults into `model`."""
    values: dict[str, Any] = read_toml(config_file) if config_file else {}
    for key, value in cli.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            value = {**values[key], **value}  # --model-arg adds to (or overrides) the file's
        if value is not None:
            values[key] = value
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


def describe_validation_error(exc: ValidationError) -> str:
    """The first validation problem as one line naming the option."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    if msg.startswith("invalid value for"):  # a validator's own message names the option
        return msg
    if not loc:
        return msg if msg.startswith("invalid value for") else f"invalid settings: {msg}"
    field = loc[0]
    value = err.get("input")
    shown = f" ({value!r})" if value is not None and not isinstance(value, dict) else ""
    return f"invalid value for {option_name(field)}{shown}: {msg}"
