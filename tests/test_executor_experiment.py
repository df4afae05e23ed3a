"""The executors on a real matrix: the same weights and figures as in process, a requeued
student resumed to the same weights, two drivers that train no run twice, and the
refusals of bad settings before anything is submitted."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from icckd_cli.commands import runs
from icckd_cli.commands.executor.job import RunJob, restarts
from icckd_cli.commands.experiment import load_experiment
from icckd_cli.commands.experiment.matrix import run_experiment
from icckd_cli.settings.config import DistillConfig, build
from tests.helpers import SETTINGS, assert_same_weights, icckd, tiny_experiment

pytestmark = pytest.mark.slow
RUNS = [
    "teachers/ce/seed0", "teachers/icc/seed0", "students/ce/kd/seed0", "students/icc/kd/seed0",
    "baseline/seed0", "teachers/ce/seed1", "teachers/icc/seed1", "students/ce/kd/seed1",
    "students/icc/kd/seed1", "baseline/seed1",
]  # fmt: skip


def figures(out: Path) -> Any:
    """results.json without what names the folder or times the machine."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: strip(v)
                for k, v in value.items()
                if k not in ("out", "command") and "latency" not in k
            }
        return [strip(v) for v in value] if isinstance(value, list) else value

    return strip(json.loads((out / "results.json").read_text()))


def assert_same_experiment(a: Path, b: Path) -> None:
    """Every run's weights, and every top-1, difference and interval, equal."""
    for label in RUNS:
        assert_same_weights(a / label, b / label)
    assert figures(a) == figures(b)
    assert figures(a)["teachers"][0]["top1"]["n"] == 2  # the figures are there to compare


@pytest.fixture(scope="module")
def inprocess(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny matrix trained in this process, one thread (conftest.py), no latency."""
    folder = tmp_path_factory.mktemp("inprocess")
    config = folder / "exp.toml"
    config.write_text(tiny_experiment(folder))
    run_experiment(load_experiment(config, {"latency": False}), lambda e, i: None)
    return folder / "exp"


def test_slurm_jobs_train_what_in_process_trains(
    slurm_cluster: Path, inprocess: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("submitit", reason="submitit is in the test extra")
    config = tmp_path / "exp.toml"
    config.write_text(
        tiny_experiment(tmp_path) + '\n[executor]\nkind = "slurm"\npartition = "debug"\n'
    )
    r = icckd(capsys, "experiment", config, "--no-latency")
    assert r.code == 0, r.err
    assert_same_experiment(inprocess, tmp_path / "exp")
    logs = sorted((tmp_path / "exp" / "executor" / "slurm").rglob("*_log.out"))
    assert len(logs) == len(RUNS)  # one job a run, its log inside the experiment's folder


def test_two_local_drivers_at_once_train_each_run_once_and_as_in_process(
    inprocess: Path, tmp_path: Path
) -> None:
    config = tmp_path / "exp.toml"
    config.write_text(tiny_experiment(tmp_path))
    command = [sys.executable, "-m", "icckd_cli", "experiment", str(config), "--no-latency"]
    command += ["--executor", "local", "--workers", "2"]
    drivers = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    time.sleep(1.0)  # the second starts while the first is submitting or training
    drivers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    errors = [d.communicate(timeout=900)[1].decode() for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], errors
    logs = tmp_path / "exp" / "executor" / "logs"
    for label in RUNS:  # each worker's log line: trained (once) or skipped (the other driver)
        lines = (logs / f"{label.replace('/', '-')}.log").read_text().splitlines()
        assert [line for line in lines if line.startswith(f"{label}: ")].count(
            f"{label}: trained"
        ) == 1, lines
        epochs = (tmp_path / "exp" / label / "metrics.jsonl").read_text().splitlines()
        assert len(epochs) == 1  # one epoch each, logged once
    assert_same_experiment(inprocess, tmp_path / "exp")


def test_a_failed_run_is_named_with_its_log_and_the_others_go_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "exp.toml"
    config.write_text(tiny_experiment(tmp_path, ("seeds = [0, 1]", "seeds = [0]")))
    damaged = tmp_path / "exp" / "baseline" / "seed0"
    damaged.mkdir(parents=True)
    (damaged / "state.safetensors").write_bytes(b"not a state file")  # resumed, and refused
    r = icckd(capsys, "experiment", config, "--no-latency", "--executor", "local")
    log = tmp_path / "exp" / "executor" / "logs" / "baseline-seed0.log"
    assert r.code == 1
    assert r.err.splitlines()[-1] == (
        f"error: 1 run(s) failed: baseline/seed0 (log: {log}); their cells are missing from "
        "the results; run the same command again to retry them"
    )
    assert "error: run baseline/seed0: " in log.read_text()
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert results["baseline"]["last"]["n"] == 0  # the missing cell, marked in the tables
    assert "n/a (0/1 seeds)" in (tmp_path / "exp" / "results.md").read_text()
    assert [t["top1"]["n"] for t in results["teachers"]] == [1, 1]  # the others went on


def test_no_wait_submits_and_the_same_command_later_collects_and_resubmits_what_died(
    slurm_cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("submitit", reason="submitit is in the test extra")
    config = tmp_path / "exp.toml"
    config.write_text(tiny_experiment(tmp_path, ("seeds = [0, 1]", "seeds = [0]")))
    command = ["experiment", config, "--no-latency", "--executor", "slurm"]
    r = icckd(capsys, *command, "--no-wait")
    assert r.code == 0, r.err
    assert "run the same command again to follow the jobs and collect the results" in r.err
    record = tmp_path / "exp" / "executor" / "jobs.json"
    submitted = json.loads(record.read_text())
    assert len(submitted) == 5 and not (tmp_path / "exp" / "results.json").exists()
    # the student alone waits for a CPU (two teachers hold both): cancelled, it dies unrun
    subprocess.run(["scancel", submitted["baseline/seed0"]["job_id"]], check=True)
    r = icckd(capsys, *command)  # attaches to the others, submits the dead one again
    assert r.code == 0, r.err
    now = json.loads(record.read_text())
    assert {k for k in now if now[k] != submitted[k]} == {"baseline/seed0"}
    results = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert results["baseline"]["last"]["n"] == 1 and results["teachers"][0]["top1"]["n"] == 1


# ----------------------------------------------------------------------------- requeue

STUDENT = {**SETTINGS, "epochs": 6, "method": "kd", "save_every": 0}


def train_student(settings: dict[str, Any], calls: Path, resume: bool) -> None:
    """A Slurm job's run: a KD student; calls.txt records each start and whether it resumed."""
    with open(calls, "a") as f:
        f.write(f"{'resume' if resume else 'train'} {restarts()}\n")

    def log(event: str, info: dict[str, Any]) -> None:
        if event == "epoch":
            print(f"epoch {info['epoch']}", flush=True)

    runs.distill(build(DistillConfig, settings), log, resume=resume)


def test_a_student_requeued_mid_run_resumes_to_the_uninterrupted_weights(
    slurm_cluster: Path, reference: Path, tmp_path: Path
) -> None:
    pytest.importorskip("submitit", reason="submitit is in the test extra")
    from icckd_cli.commands.executor.slurm import SlurmPool
    from icckd_cli.settings.executor import ExecutorConfig

    teacher = reference / "model.safetensors"
    whole = {**STUDENT, "teacher": teacher, "out": tmp_path / "whole"}
    runs.distill(build(DistillConfig, whole), lambda e, i: None)
    out = tmp_path / "requeued"
    settings = {**whole, "out": out}
    job = RunJob("student", out, functools.partial(train_student, settings, tmp_path / "calls"))
    pool = SlurmPool(ExecutorConfig(kind="slurm"), tmp_path / "slurm")
    (handle,) = pool.submit([job], [])
    deadline = time.monotonic() + 300
    while "epoch 1" not in (handle.log.read_text() if handle.log.is_file() else ""):
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", handle.job_id], check=True)  # as a preemption would
    pool.step()
    while pool.state(handle) != "ended":
        assert time.monotonic() < deadline, "the requeued job did not end"
        time.sleep(1)
        pool.step()
    assert (tmp_path / "calls").read_text().splitlines() == ["train 0", "resume 1"]
    assert "DUE TO JOB REQUEUE" in handle.log.with_suffix(".err").read_text()
    assert_same_weights(tmp_path / "whole", out)


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("more", "message"),
    [
        (["--workers", "0"], "invalid --workers 0: Input should be greater than or equal to 1"),
        (
            ["--executor", "local", "--no-wait"],
            "--no-wait needs --executor slurm (local workers and in-process runs end with the "
            "command)",
        ),
        (
            ["--workers", "2"],
            "--workers 2 needs --executor local or slurm (inprocess runs one run at a time)",
        ),
    ],
)
def test_bad_executor_settings_are_refused_before_any_work(
    more: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "exp.toml"
    config.write_text(tiny_experiment(tmp_path))
    r = icckd(capsys, "experiment", config, *more)
    assert (r.code, r.err) == (2, f"error: {message}\n")
    assert not (tmp_path / "exp").exists()


def test_slurm_without_sbatch_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("submitit", reason="submitit is in the test extra")
    monkeypatch.setenv("PATH", str(tmp_path))
    config = tmp_path / "exp.toml"
    config.write_text(tiny_experiment(tmp_path))
    r = icckd(capsys, "experiment", config, "--executor", "slurm")
    assert r.code == 2
    assert r.err.startswith("error: --executor slurm needs sbatch on PATH;")
    assert len(r.err.splitlines()) == 1
    assert not (tmp_path / "exp").exists()


def test_an_unknown_partition_is_refused_before_any_work(
    slurm_cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("submitit", reason="submitit is in the test extra")
    config = tmp_path / "exp.toml"
    config.write_text(
        tiny_experiment(tmp_path) + '\n[executor]\nkind = "slurm"\npartition = "gpu"\n'
    )
    r = icckd(capsys, "experiment", config)
    assert (r.code, r.err) == (2, "error: unknown partition 'gpu'; sinfo lists: debug\n")
    assert not (tmp_path / "exp").exists()
    assert os.environ["SLURM_CONF"].startswith(str(slurm_cluster))


def test_slurm_without_submitit_is_refused_naming_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now fails
    config = tmp_path / "exp.toml"
    config.write_text(tiny_experiment(tmp_path))
    r = icckd(capsys, "experiment", config, "--executor", "slurm")
    assert (r.code, r.err) == (
        2,
        "error: --executor slurm needs the submitit package; install it with "
        "pip install -e '.[slurm]'\n",
    )
    assert not (tmp_path / "exp").exists()


def test_a_gpu_per_local_run_is_refused_on_a_machine_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("icckd_cli.commands.executor.checks.machine_gpus", lambda: 0)
    config = tmp_path / "exp.toml"
    config.write_text(tiny_experiment(tmp_path) + "\n[executor]\ngpus_per_run = 1\n")
    r = icckd(capsys, "experiment", config, "--executor", "local", "--workers", "2")
    assert (r.code, r.err) == (
        2,
        "error: gpus_per_run = 1 but this machine has no GPU; set gpus_per_run = 0 (each run "
        "then uses threads_per_run CPU threads)\n",
    )
    assert not (tmp_path / "exp").exists()


def test_tune_refuses_bad_executor_settings_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_tune import tune_file

    path = tune_file(tmp_path)
    r = icckd(capsys, "tune", path, "--out", tmp_path / "out", "--workers", "0")
    assert (r.code, r.err) == (
        2,
        "error: invalid --workers 0: Input should be greater than or equal to 1\n",
    )
    assert not (tmp_path / "out").exists()
