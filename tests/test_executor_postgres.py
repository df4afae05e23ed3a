"""Tuning workers as a Slurm job array on a throwaway PostgreSQL: exactly n trials, and a
worker killed mid-trial leaves no trial RUNNING once the study ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from icckd_cli.commands.tune import study as study_mod
from tests.test_executor_tune import running_worker
from tests.test_tune import tune_file
from tests.test_tune_postgres import optuna, postgres

pytestmark = pytest.mark.slow
__all__ = ["postgres"]  # the fixture, imported for the tests below


def test_slurm_workers_on_postgresql_end_with_n_trials_though_one_was_killed(
    slurm_cluster: Path, postgres: str, tmp_path: Path
) -> None:
    pytest.importorskip("submitit", reason="submitit is in the test extra")
    path, out = tune_file(tmp_path, "teacher", n=3, epochs=3), tmp_path / "out"
    command = [sys.executable, "-m", "icckd_cli", "tune", str(path), "--out", str(out)]
    command += ["--storage", postgres, "--executor", "slurm", "--workers", "2"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    load = lambda: optuna.load_study(study_name="tiny", storage=postgres)  # noqa: E731
    os.kill(running_worker(driver, load, out), signal.SIGKILL)  # the worker's process, mid-trial
    _, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err
    assert "stopped early; its log: " in err
    study = optuna.load_study(study_name="tiny", storage=postgres)
    states = [t.state.name for t in study.get_trials()]
    assert "RUNNING" not in states
    lost = study_mod.lost_trials(study)  # failed by their heartbeat: not counted
    assert [t.state.name for t in study.get_trials() if study_mod.counted(t, lost)] == [
        "COMPLETE"
    ] * 3
    assert len(lost) == 1  # the killed worker's trial, failed once its heartbeat went stale
