"""The files a study leaves in OUT: best-teacher.toml (a train-teacher config file) and
confirm.toml (an experiment file: the cross-entropy teacher against the tuned one, 3 seeds)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from icckd_cli.base.atomic import write_text_atomic
from icckd_cli.commands.tune.config import TuneFile

BEST_TEACHER, CONFIRM = "best-teacher.toml", "confirm.toml"
# the settings of the intra-class term (docs/method.md) and label smoothing: the cross-entropy
# teacher of confirm.toml takes the tuned teacher's other settings, but none of these
TEACHER_TERM = ("icc_weight", "margin", "icc_temperature", "queue_size", "embedding",
                "projection_dim", "label_smoothing")  # fmt: skip
SEEDS = [0, 1, 2]


def toml_value(value: Any) -> str:
    """One TOML value: a string, number, boolean, list or inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no TOML spelling here")
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise ValueError(f"{value!r} has no TOML spelling here")


def toml_table(name: str | None, values: dict[str, Any], array: bool = False) -> str:
    """A [name] (or [[name]]) table of the values that are not None."""
    head = [] if name is None else [f"[[{name}]]" if array else f"[{name}]"]
    body = [f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(head + body) + "\n"


def split_params(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{'teacher.margin': 0.3} -> {'teacher': {'margin': 0.3}}."""
    out: dict[str, dict[str, Any]] = {"teacher": {}, "student": {}}
    for name, value in params.items():
        role, _, key = name.partition(".")
        out.setdefault(role, {})[key] = value
    return out


def best_teacher_toml(tune: TuneFile, params: dict[str, Any], number: int, name: str) -> str:
    """train-teacher settings of the best trial's teacher, data keys included."""
    p = split_params(params)
    out = Path(tune.options.out).resolve() / "best-teacher"
    values = {**tune.data_keys(), **tune.fixed["teacher"], **p["teacher"], "out": out}
    head = (
        f"# The teacher of trial {number}, the best of study '{name}' on the validation split.\n"
        f"#     icckd train-teacher --config {Path(tune.options.out) / BEST_TEACHER}\n"
        "# val_per_class/val_fraction hold out the same validation images as the trials; drop\n"
        "# them to train on every training image.\n"
    )
    return head + toml_table(None, values)


def confirm_toml(tune: TuneFile, params: dict[str, Any], number: int, name: str) -> str:
    """An experiment file: the cross-entropy teacher and the tuned one, 3 seeds, on test."""
    p = split_params(params)
    fixed_teacher = {k: v for k, v in tune.fixed["teacher"].items() if k != "seed"}
    tuned = {k: v for k, v in {**fixed_teacher, **p["teacher"]}.items() if k in TEACHER_TERM}
    common = {k: v for k, v in fixed_teacher.items() if k not in TEACHER_TERM}
    other = {k: v for k, v in p["teacher"].items() if k not in TEACHER_TERM}
    experiment = {
        "name": f"confirm {name}",
        **tune.data_keys(),
        "seeds": SEEDS,
        "out": Path(tune.options.out).resolve() / "confirm",
    }
    parts = [
        f"# Does the setting study '{name}' chose (trial {number}, on the validation split)\n"
        "# help on the test split? The cross-entropy teacher against the tuned intra-class\n"
        "# teacher over 3 seeds, with intervals:\n"
        f"#     icckd experiment {Path(tune.options.out) / CONFIRM}\n",
        toml_table("experiment", experiment),
        toml_table("teacher", {**common, **other}),
        toml_table("teachers", {"name": "ce", "icc_weight": 0}, array=True),
        toml_table("teachers", {"name": "tuned", **tuned}, array=True),
    ]
    student = {k: v for k, v in tune.fixed["student"].items() if k != "seed"}
    if tune.options.target == "student" or student:
        method = student.pop("method", "kd")
        parts.append(toml_table("student", {**student, **p["student"]}))
        parts.append(toml_table("students", {"name": method, "method": method}, array=True))
    return "\n".join(parts)


def write_best_files(tune: TuneFile, best: dict[str, Any], name: str) -> list[Path]:
    """OUT/best-teacher.toml and OUT/confirm.toml for the best trial; their paths."""
    out = Path(tune.options.out)
    files = {
        BEST_TEACHER: best_teacher_toml(tune, best["params"], best["number"], name),
        CONFIRM: confirm_toml(tune, best["params"], best["number"], name),
    }
    written = []
    for file, text in files.items():
        write_text_atomic(out / file, text)
        written.append(out / file)
    return written
