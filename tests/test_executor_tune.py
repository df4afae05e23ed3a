"""Tuning workers as a Slurm job array and as local worker processes, on one journal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from icckd_cli.commands.tune import study as study_mod
from tests.helpers import icckd
from tests.test_tune import journal_study, tune_file

pytestmark = pytest.mark.slow
optuna = pytest.importorskip("optuna")


def running_worker(driver: subprocess.Popen[str], study: Any, out: Path) -> int:
    """The process id of a worker in the middle of a trial (its teacher run has started)."""
    deadline = time.monotonic() + 300
    while True:
        assert driver.poll() is None and time.monotonic() < deadline, "no trial started"
        trials = study() if (out / "study.json").exists() else None
        for t in trials.get_trials() if trials is not None else []:
            folder = t.user_attrs.get("run_dir")
            if t.state.name == "RUNNING" and folder and (Path(folder) / "teacher").is_dir():
                return int(t.user_attrs["pid"])
        time.sleep(0.2)


def counted_states(out: Path) -> list[str]:
    study = journal_study(out)
    return [t.state.name for t in study.get_trials() if study_mod.counted(t)]


def test_slurm_workers_finish_exactly_n_trials(
    slurm_cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("submitit", reason="submitit is in the test extra")
    path, out = tune_file(tmp_path, "teacher", n=3), tmp_path / "out"
    r = icckd(capsys, "tune", path, "--out", out, "--executor", "slurm", "--workers", "2")
    assert r.code == 0, r.err
    assert counted_states(out) == ["COMPLETE"] * 3
    study = journal_study(out)
    assert all(t.state.name != "RUNNING" for t in study.get_trials())
    logs = sorted((out / "executor" / "slurm").rglob("*_log.out"))
    assert len(logs) == 2  # one job a worker, its log in the study's folder
    assert (out / "best-teacher.toml").is_file()  # the driver summed the study up


def test_a_worker_killed_mid_trial_leaves_no_trial_running(
    slurm_cluster: Path, tmp_path: Path
) -> None:
    pytest.importorskip("submitit", reason="submitit is in the test extra")
    path, out = tune_file(tmp_path, "teacher", n=3, epochs=3), tmp_path / "out"
    command = [sys.executable, "-m", "icckd_cli", "tune", str(path), "--out", str(out)]
    driver = subprocess.Popen(
        [*command, "--executor", "slurm", "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = running_worker(driver, lambda: journal_study(out), out)
    os.kill(victim, signal.SIGKILL)  # the worker's own process, mid-trial
    _, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err
    assert "stopped early; its log: " in err
    study = journal_study(out)
    assert [t.state.name for t in study.get_trials() if t.state.name == "RUNNING"] == []
    assert counted_states(out) == ["COMPLETE"] * 3


def test_local_workers_finish_exactly_n_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, out = tune_file(tmp_path, "teacher", n=3), tmp_path / "out"
    r = icckd(capsys, "tune", path, "--out", out, "--executor", "local", "--workers", "2")
    assert r.code == 0, r.err
    assert counted_states(out) == ["COMPLETE"] * 3
    pids = {t.user_attrs["pid"] for t in journal_study(out).get_trials()}
    assert os.getpid() not in pids  # the workers ran the trials, not the driver
    assert len(list((out / "executor" / "logs").glob("worker-*.log"))) == 2
