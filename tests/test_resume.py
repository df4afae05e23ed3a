"""Nothing lost: interrupt and resume bit for bit, the NaN guard, --overwrite.

An interrupt is a real SIGINT, sent from the progress callback at a chosen step and caught
by the run's own signal handler; resuming, refusing and failing go through the real CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from icckd_cli import report, runs
from icckd_cli.checkpoint import read_metadata
from icckd_cli.config import TrainTeacherConfig, build
from icckd_cli.engine import Interrupted
from tests.helpers import Result, icckd
from tests.test_errors import check_fails, one_error

pytestmark = pytest.mark.slow

Capsys = pytest.CaptureFixture[str]
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


def ok(capsys: Capsys, *argv: str | Path) -> Result:
    """Run the CLI and require success."""
    r = icckd(capsys, *map(str, argv))
    assert r.code == 0, r.err
    return r


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


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted teacher run."""
    out = tmp_path_factory.mktemp("reference") / "teacher"
    runs.train_teacher(build(TrainTeacherConfig, {**TEACHER, "out": out}), lambda e, i: None)
    return out


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, stopped by SIGINT at step 4 of epoch 1 (copy it before changing it)."""
    out = tmp_path_factory.mktemp("interrupted") / "teacher"
    cfg = build(TrainTeacherConfig, {**TEACHER, "out": out})
    with pytest.raises(Interrupted):
        runs.train_teacher(cfg, sigint_at(0, 4))
    return out


def copy(run: Path, tmp_path: Path) -> Path:
    """A private copy of a module-scoped run folder."""
    return Path(shutil.copytree(run, tmp_path / run.name))


def test_same_seed_gives_identical_weights(capsys: Capsys, reference: Path, tmp_path: Path) -> None:
    ok(capsys, *args("train-teacher", TEACHER, out=tmp_path / "again"))
    assert_same_weights(reference, tmp_path / "again")
    assert history(reference) == history(tmp_path / "again")


def test_interrupted_teacher_resumes_bit_for_bit(
    capsys: Capsys, reference: Path, interrupted: Path, tmp_path: Path
) -> None:
    run = copy(interrupted, tmp_path)
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "state.safetensors"]
    extra = read_metadata(run / "state.safetensors")["extra"]
    assert (extra["epoch"], extra["step"]) == (0, 4)  # mid-epoch: partial sums, queue, momentum
    state = run / "state.safetensors"
    check_fails(capsys, run, 2, "eval", state, says=f"finish the run with --resume {run}")
    ok(capsys, "train-teacher", "--resume", run)
    assert_same_weights(reference, run)
    assert history(reference) == history(run)  # the same losses, accuracy and calibration
    assert not (run / "state.safetensors").exists()


def test_interrupted_student_resumes_bit_for_bit(
    capsys: Capsys, monkeypatch: pytest.MonkeyPatch, reference: Path, tmp_path: Path
) -> None:
    teacher = tmp_path / "teacher.safetensors"
    shutil.copy(reference / "model.safetensors", teacher)
    ok(capsys, *args("distill", STUDENT, teacher=teacher, out=tmp_path / "whole"))
    # Ctrl-C in epoch 2, after the end-of-epoch save, through the CLI's own progress display
    run = tmp_path / "resumed"
    show = report.TrainingProgress.__call__
    stop = sigint_at(1, 3)

    def progress(self: report.TrainingProgress, event: str, info: dict[str, Any]) -> None:
        show(self, event, info)
        stop(event, info)

    monkeypatch.setattr(report.TrainingProgress, "__call__", progress)
    r = icckd(capsys, *args("distill", STUDENT, teacher=teacher, out=run))
    monkeypatch.undo()
    assert r.code == INTERRUPTED, r.err
    assert r.err.strip().splitlines()[-1] == (
        f"interrupted: state saved in {run}; continue with icckd distill --resume {run}"
    )
    # another teacher under the same name would make the resumed run another run: refused
    good = teacher.read_bytes()
    ok(capsys, *args("train-teacher", TEACHER, epochs=1, train_per_class=3, out=tmp_path / "b"))
    shutil.copy(tmp_path / "b" / "model.safetensors", teacher)
    r = icckd(capsys, "distill", "--resume", str(run))
    assert r.code == 2
    assert "changed since this run was interrupted" in one_error(r.err)
    teacher.write_bytes(good)
    ok(capsys, "distill", "--resume", run)
    assert_same_weights(tmp_path / "whole", run)
    assert history(tmp_path / "whole") == history(run)


def test_nan_stops_the_run_and_names_the_part(capsys: Capsys, tmp_path: Path) -> None:
    out = tmp_path / "nan"
    r = icckd(capsys, *args("train-teacher", TEACHER, lr=1e6, out=out))
    assert r.code == 1
    line = one_error(r.err)
    assert re.fullmatch(
        r"error: the loss part '(ce|icc)' became NaN or infinite at epoch 1, step \d+; try a "
        r"lower --lr \(it was 1e\+06\) or a lower --icc-weight; nothing was saved from this "
        r"run \(no resumable state had been written yet\)",
        line,
    ), line
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_nan_keeps_the_last_good_state(capsys: Capsys, interrupted: Path, tmp_path: Path) -> None:
    run = copy(interrupted, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "lr": 1e6}))
    good = (run / "state.safetensors").read_bytes()
    r = icckd(capsys, "train-teacher", "--resume", str(run))
    assert r.code == 1
    line = one_error(r.err)
    # at this rate batch norm's running statistics overflow while the losses stay finite
    assert re.match(r"error: the (loss part '\w+'|weights) became NaN or infinite", line), line
    assert line.endswith(
        f"nothing was saved after it: the last good state (epoch 1, step 4) stays in "
        f"{run / 'state.safetensors'}"
    )
    assert (run / "state.safetensors").read_bytes() == good
    assert not (run / "model.safetensors").exists()


def test_finished_run_is_not_replaced_without_overwrite(
    capsys: Capsys, reference: Path, tmp_path: Path
) -> None:
    run = copy(reference, tmp_path)
    line = check_fails(capsys, run, 2, *args("train-teacher", TEACHER, out=run))
    assert line == (
        f"error: {run} already holds a finished run (model.safetensors); pass --overwrite to "
        "replace it or choose another --out"
    )
    check_fails(capsys, run, 2, "train-teacher", "--resume", run, says="nothing to resume")
    tiny = args("train-teacher", TEACHER, epochs=1, train_per_class=3, out=run)
    ok(capsys, *tiny, "--overwrite")
    assert read_metadata(run / "model.safetensors")["config"]["epochs"] == 1
    assert len(history(run)) == 1


def test_interrupted_run_is_not_restarted_by_accident(
    capsys: Capsys, interrupted: Path, tmp_path: Path
) -> None:
    run = copy(interrupted, tmp_path)
    line = check_fails(capsys, run, 2, *args("train-teacher", TEACHER, out=run))
    assert line == (
        f"error: {run} holds an interrupted run (state.safetensors); continue it with --resume "
        f"{run}, or pass --overwrite to start afresh"
    )
    nothing = ["train-teacher", "--resume", tmp_path / "nothing"]
    check_fails(capsys, tmp_path, 2, *nothing, says="holds no config.json")


def test_full_disk_at_the_end_loses_nothing(
    capsys: Capsys, monkeypatch: pytest.MonkeyPatch, reference: Path, tmp_path: Path
) -> None:
    def full(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    run = tmp_path / "teacher"
    monkeypatch.setattr(runs, "save_model", full)
    r = icckd(capsys, *args("train-teacher", TEACHER, out=run))
    assert r.code == 1 and "Traceback" not in r.err
    assert r.err.strip().splitlines()[-1] == (  # after the epoch lines
        f"error: cannot write {run / 'model.safetensors'} (No space left on device); free space "
        f"or fix the folder's permissions; the last good state stays in "
        f"{run / 'state.safetensors'}: continue with --resume {run}"
    )
    monkeypatch.undo()  # space freed
    ok(capsys, "train-teacher", "--resume", run)
    assert_same_weights(reference, run)
