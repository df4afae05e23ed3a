"""Run folders: a run is never clobbered by accident, a failed write says what is kept,
NaN leaves the last good state, Ctrl-C becomes a flag.

Refusing and failing go through the real CLI; the shared `reference` and `interrupted`
runs are built in conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from icckd_cli.base.checkpoint import read_metadata, save_tensors
from icckd_cli.base.errors import IcckdError
from icckd_cli.commands import runs
from icckd_cli.training.rundir import (
    decay_epochs,
    kept_state,
    read_metrics,
    stop_on_signals,
    writing,
)
from tests.helpers import (
    TEACHER,
    args,
    assert_same_weights,
    check_fails,
    copy,
    history,
    icckd,
    ok,
    one_error,
)

Capsys = pytest.CaptureFixture[str]


def write_state(out: Path, epoch: int, step: int) -> Path:
    """A state file that says where its run stood, as a run writes it."""
    path = out / "state.safetensors"
    extra = {"epoch": epoch, "step": step}
    save_tensors(path, {"rng/torch": torch.get_rng_state()}, {"kind": "state", "extra": extra})
    return path


def test_kept_state_says_where_the_last_good_state_is(tmp_path: Path) -> None:
    assert kept_state(tmp_path) == (
        "; nothing was saved from this run (no resumable state had been written yet)"
    )
    path = write_state(tmp_path, 1, 0)
    assert kept_state(tmp_path) == (
        f"; nothing was saved after it: the last good state (end of epoch 1) stays in {path}"
    )
    write_state(tmp_path, 1, 4)  # epoch 1 counted from 0: the second one, mid-way
    assert "the last good state (epoch 2, step 4)" in kept_state(tmp_path)


def test_failed_write_is_one_line_that_says_what_is_kept(tmp_path: Path) -> None:
    def full() -> None:
        with writing(tmp_path, "model.safetensors"):
            raise OSError(28, "No space left on device")

    with pytest.raises(IcckdError) as exc:
        full()
    assert exc.value.message == (
        f"cannot write {tmp_path / 'model.safetensors'} (No space left on device); free space "
        "or fix the folder's permissions"
    )
    write_state(tmp_path, 0, 3)
    with pytest.raises(IcckdError, match=f"continue with --resume {tmp_path}$"):
        full()


def test_metrics_of_a_live_run_skip_the_line_being_written(tmp_path: Path) -> None:
    done = [{"epoch": 1, "top1": 10.0}, {"epoch": 2, "top1": 20.0}]
    text = "".join(json.dumps(r) + "\n" for r in done)
    (tmp_path / "metrics.jsonl").write_text(text + '{"epoch": 3, "to')
    assert read_metrics(tmp_path) == done
    (tmp_path / "metrics.jsonl").write_text(text + '{"epoch": 3}')  # whole, newline to come
    assert read_metrics(tmp_path) == [*done, {"epoch": 3}]
    (tmp_path / "metrics.jsonl").write_text("")
    assert read_metrics(tmp_path) == []
    assert decay_epochs(tmp_path) == []  # no config.json: nothing to mark
    (tmp_path / "config.json").write_text('{"lr_decay_epochs": [5, 8]}')
    assert decay_epochs(tmp_path) == [5, 8]


def test_ctrl_c_becomes_a_flag_and_the_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals() as flag:
        assert flag == [False]
        os.kill(os.getpid(), signal.SIGINT)
        assert flag == [True]
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
