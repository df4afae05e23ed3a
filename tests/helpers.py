"""Running the real CLI in-process, as a user's shell would, and a tiny experiment, for tests."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from icckd_cli.cli import main
from icckd_cli.experiment import Experiment, parse_experiment

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TINY = ["--dataset", "digits", "--train-per-class", "20", "--test-per-class", "5",
        "--batch-size", "16", "--device", "cpu"]  # fmt: skip


@dataclass
class Result:
    """Exit code and the captured streams of one CLI call."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as one JSON document."""
        return json.loads(self.out)


def icckd(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """Run `icckd ARGS...` in this process and capture what it prints."""
    capsys.readouterr()
    old = sys.argv
    sys.argv = ["icckd", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


# 20 digits a class, 2 teachers, a KD student of each and the baseline, 2 seeds: 10 small runs.
TINY_EXPERIMENT = """\
[experiment]
name = "tiny"
dataset = "digits"
train_per_class = 20
test_per_class = 5
seeds = [0, 1]
out = "{out}"
device = "cpu"

[teacher]
arch = "resnet8"  # teacher
epochs = 1  # teacher
batch_size = 16

[[teachers]]
name = "ce"
icc_weight = 0

[[teachers]]
name = "icc"
icc_weight = 0.1
margin = -1
queue_size = 8

[student]
arch = "resnet8"
epochs = 1  # student
batch_size = 16
baseline = true

[[students]]
method = "kd"
"""


def tiny_experiment(tmp_path: Path, *replace: tuple[str, str]) -> str:
    """TINY_EXPERIMENT with its runs under tmp_path/exp and each (old, new) replaced."""
    text = TINY_EXPERIMENT.format(out=tmp_path / "exp")
    for old, new in replace:
        assert old in text
        text = text.replace(old, new)
    return text


def parse_experiment_text(text: str, source: str = "x.toml") -> Experiment:
    """An experiment file's text, validated as if read from `source`."""
    return parse_experiment(tomllib.loads(text), source)
