"""Running the real CLI in-process, as a user's shell would, for tests; training runs and a
tiny experiment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from icckd_cli.base.checkpoint import save_model
from icckd_cli.cli import main
from icckd_cli.commands.experiment.config import parse_experiment
from icckd_cli.commands.experiment.plan import Experiment
from icckd_cli.data import load_dataset
from icckd_cli.models import ZooModel, create_model

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


def digits_teacher(path: Path, config: dict[str, Any] | None = None) -> ZooModel:
    """An untrained resnet8 (seed 0) saved as a teacher of the digits data set."""
    spec = load_dataset("digits", train_per_class=3, test_per_class=2).spec
    torch.manual_seed(0)
    model = create_model("resnet8", 10)
    meta = {
        "kind": "teacher",
        "arch": "resnet8",
        "num_classes": 10,
        "dataset": spec.to_dict(),
        "config": config or {},
    }
    save_model(path, model, meta)
    return model


def ok(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    """Run the CLI and require success."""
    r = icckd(capsys, *map(str, argv))
    assert r.code == 0, r.err
    return r


# ----------------------------------------------------------------------------- training runs

# the `reference` and `interrupted` runs of conftest.py use these settings
SETTINGS: dict[str, Any] = {
    "arch": "resnet8", "dataset": "digits", "train_per_class": 20, "test_per_class": 5,
    "epochs": 2, "batch_size": 32, "device": "cpu", "save_every": 1,
}  # fmt: skip
# the intra-class term on every anchor (no gate) with a cache: all the state there is to keep
TEACHER = {**SETTINGS, "icc_weight": 0.1, "margin": -1, "queue_size": 8}
# CRD: memory banks and negatives drawn from the global random generator
STUDENT = {**SETTINGS, "method": "crd", "crd_nce_k": 32}
INTERRUPTED = 130


def args(command: str, settings: dict[str, Any], **more: Any) -> list[str]:
    """The command line for a settings dict: {'batch_size': 32} -> --batch-size 32."""
    items = {**settings, **more}.items()
    return [command, *(x for k, v in items for x in (f"--{k.replace('_', '-')}", str(v)))]


def sigint_at(epoch: int, step: int) -> Callable[[str, dict[str, Any]], None]:
    """A progress callback that sends this process SIGINT at (epoch, step), as Ctrl-C would."""

    def callback(event: str, info: dict[str, Any]) -> None:
        if event == "step" and (info["epoch"], info["step"]) == (epoch, step):
            os.kill(os.getpid(), signal.SIGINT)

    return callback


def weights(run: Path) -> dict[str, torch.Tensor]:
    """The tensors of a finished run's model."""
    return load_file(str(run / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    """Bit-for-bit equal models."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def history(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the timings, which differ from run to run."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in rows]


def copy(run: Path, tmp_path: Path) -> Path:
    """A private copy of a shared run folder."""
    return Path(shutil.copytree(run, tmp_path / run.name))


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


# ----------------------------------------------------------------------------- bad inputs

USAGE, RUNTIME = 2, 1
# the smallest run that reaches a bad input: errors are checked, nothing is learned
TINY_ERRORS = [
    "--dataset", "digits", "--train-per-class", "3", "--test-per-class", "2", "--epochs", "1",
    "--batch-size", "16", "--device", "cpu",
]  # fmt: skip


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for folders): 'nothing touched' compares two."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def one_error(err: str) -> str:
    """The single stderr line, checked to be an error line without a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def check_fails(
    capsys: pytest.CaptureFixture[str],
    root: Path,
    code: int,
    *args: str | Path,
    says: str | tuple[str, ...] = (),
) -> str:
    """Run a bad command: one error line holding `says`, the exit code, root untouched."""
    before = snapshot(root)
    r = icckd(capsys, *map(str, args))
    line = one_error(r.err)
    assert r.code == code, (r.code, line)
    assert r.out == ""
    for part in (says,) if isinstance(says, str) else says:
        assert part in line, line
    assert snapshot(root) == before
    return line
