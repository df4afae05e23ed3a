"""icckd tune end to end on tiny digits studies: trials, files, resume, pruning, divergence,
and two workers on one journal file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from icckd_cli.commands import runs
from icckd_cli.commands.experiment import load_experiment
from icckd_cli.commands.tune import sampling
from icckd_cli.commands.tune import study as study_mod
from icckd_cli.settings.config import TrainTeacherConfig, build
from tests.helpers import icckd

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"study_name", "storage", "target", "direction", "best", "trials", "importances"}
TRIAL_KEYS = {"number", "state", "value", "params", "duration_s", "run_dir"}

TINY = """\
[tune]
dataset = "digits"
train_per_class = 10
val_per_class = 5
test_per_class = 5
target = "{target}"
n_trials = {n}
sampler = "random"
pruner = "none"
device = "cpu"
tensorboard = false

[teacher]
arch = "resnet8"
epochs = {epochs}
batch_size = 16

[student]
arch = "resnet8"
epochs = 1
batch_size = 16

[space.teacher]
icc_weight = {{ low = 0.0, high = 0.5 }}
margin = {{ low = -1.0, high = 0.9 }}
queue_size = {{ choices = [0, 16] }}
{student_space}
"""


def tune_file(folder: Path, target: str = "teacher", n: int = 3, epochs: int = 1) -> Path:
    """A tiny study file: 50 training, 50 validation and 50 test digits, resnet8, 1 epoch."""
    space = "[space.student]\nkd_temperature = [2.0, 4.0]\n" if target == "student" else ""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.toml"
    path.write_text(TINY.format(target=target, n=n, epochs=epochs, student_space=space))
    return path


def worker(path: Path, out: Path, *more: str) -> subprocess.Popen[str]:
    """`icckd tune` in its own process, as a user starts a worker."""
    # one thread each: two workers on CI's 2 cores would otherwise fight over them
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "icckd_cli", "tune", str(path), "--out", str(out), *more]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def killed_mid_trial(path: Path, out: Path, *more: str) -> subprocess.Popen[str]:
    """A worker SIGKILLed once its trial 0 has started (no goodbye, no heartbeat after)."""
    proc = worker(path, out, *more)
    deadline = time.monotonic() + 300
    while not (out / "trials" / "0000" / "teacher" / "config.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc


def finished(proc: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out, err


def journal_study(out: Path, name: str = "tiny") -> Any:
    """The study as optuna itself reads it from OUT's journal."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def counted_numbers(study: Any) -> list[int]:
    return sorted(t.number for t in study.get_trials() if study_mod.counted(t))


@pytest.fixture(scope="module")
def study3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], str]]:
    """A 3-trial study with target student, run through the command: (OUT, JSON, stderr)."""
    folder = tmp_path_factory.mktemp("study3")
    out, err = finished(worker(tune_file(folder, "student"), folder / "out", "--format", "json"))
    yield folder / "out", json.loads(out), err


@pytest.mark.slow
def test_a_three_trial_study_reports_its_trials_as_json(
    study3: tuple[Path, dict[str, Any], str],
) -> None:
    out, result, err = study3
    assert set(result) == KEYS
    assert result["target"] == "student" and result["direction"] == "maximize"
    assert result["storage"] == str((out / "study.journal").resolve())
    assert [set(t) for t in result["trials"]] == [TRIAL_KEYS] * 3
    assert sorted(t["number"] for t in result["trials"]) == [0, 1, 2]
    assert all(t["state"] == "complete" for t in result["trials"])
    values = [t["value"] for t in result["trials"]]
    assert values == sorted(values, reverse=True)  # best first
    assert set(result["best"]) == {"number", "value", "params", "test_top1"}
    assert result["best"]["value"] == values[0]
    names = {"teacher.icc_weight", "teacher.margin", "teacher.queue_size", "student.kd_temperature"}
    assert all(set(t["params"]) == names for t in result["trials"])
    assert set(result["importances"]) == names
    assert abs(sum(result["importances"].values()) - 1) < 1e-6
    # a progress line per trial on stderr; stdout is the JSON alone
    assert sum(line.startswith("trial ") for line in err.splitlines()) == 3
    for t in result["trials"]:  # ordinary runs, in OUT/trials/NNNN/{teacher,student}
        run_dir = Path(t["run_dir"])
        assert (
            run_dir.is_absolute() and run_dir == (out / "trials" / f"{t['number']:04d}").resolve()
        )
        for role in ("teacher", "student"):
            assert (run_dir / role / "model.safetensors").is_file()
            rows = [
                json.loads(x) for x in (run_dir / role / "metrics.jsonl").read_text().splitlines()
            ]
            # the search never read the test split: validation numbers only
            assert all("val_top1" in r and "top1" not in r and "nll" not in r for r in rows)
        last = json.loads((run_dir / "student" / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["val_top1"] == t["value"]  # the value is the last epoch's validation top-1
    for figure in ("optimization-history.png", "parameters.png"):
        assert (out / figure).stat().st_size > 1000


@pytest.mark.slow
def test_the_best_trial_is_read_once_on_test(
    capsys: pytest.CaptureFixture[str],
    study3: tuple[Path, dict[str, Any], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from icckd_cli.commands import evaluation
    from icckd_cli.commands.tune.results import TEST_TOP1

    out, result, _ = study3
    best = result["best"]
    kept = journal_study(out).user_attrs[TEST_TOP1]
    assert kept == {"trial": best["number"], "value": best["test_top1"]}
    copy = Path(shutil.copytree(out, tmp_path / "out"))  # the study's trials stay where they ran
    real, reads = evaluation.evaluate_checkpoint, []

    def counted(path: Path, **kw: Any) -> dict[str, Any]:
        reads.append((Path(path), kw["split"]))
        return real(path, **kw)

    monkeypatch.setattr(evaluation, "evaluate_checkpoint", counted)
    path = tune_file(tmp_path, "student")

    def rerun() -> dict[str, Any]:
        r = icckd(capsys, "tune", str(path), "--out", str(copy), "--format", "json")
        assert r.code == 0, r.err
        return dict(r.json()["best"])

    assert rerun() == best and reads == []  # kept with the study: not read again
    journal_study(copy).set_user_attr(TEST_TOP1, {"trial": -1, "value": None})  # as if lost
    assert rerun() == best  # read again, to the same top-1
    run_dir = next(t["run_dir"] for t in result["trials"] if t["number"] == best["number"])
    assert reads == [(Path(run_dir) / "student" / "model.safetensors", "test")]
    assert rerun() == best and len(reads) == 1  # once
    kept = journal_study(copy).user_attrs[TEST_TOP1]
    assert kept == {"trial": best["number"], "value": best["test_top1"]}


@pytest.mark.slow
def test_best_teacher_toml_is_a_train_teacher_config(
    capsys: pytest.CaptureFixture[str], study3: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    out, result, _ = study3
    best = result["best"]
    cfg = build(TrainTeacherConfig, {}, out / "best-teacher.toml")
    trial = json.loads((out / "trials" / f"{best['number']:04d}/teacher/config.json").read_text())
    for key in ("icc_weight", "margin", "queue_size", "epochs", "arch", "train_per_class",
                "val_per_class", "test_per_class", "batch_size", "dataset"):  # fmt: skip
        assert getattr(cfg, key) == trial[key], key
    r = icckd(capsys, "train-teacher", "--config", str(out / "best-teacher.toml"),
              "--out", str(tmp_path / "t"), "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    assert (tmp_path / "t" / "model.safetensors").is_file()


@pytest.mark.slow
def test_confirm_toml_is_an_experiment_file(
    capsys: pytest.CaptureFixture[str], study3: tuple[Path, dict[str, Any], str]
) -> None:
    out, result, _ = study3
    r = icckd(capsys, "experiment", str(out / "confirm.toml"), "--dry-run")
    assert r.code == 0, r.err
    exp = load_experiment(out / "confirm.toml")
    assert exp.options.seeds == [0, 1, 2]
    ce, tuned = exp.teachers
    assert (ce.name, tuned.name) == ("ce", "tuned") and ce.cross_entropy
    params = result["best"]["params"]
    assert tuned.config.margin == params["teacher.margin"]
    assert tuned.config.icc_weight == params["teacher.icc_weight"]
    assert [s.config.kd_temperature for s in exp.students] == [params["student.kd_temperature"]]
    assert len(exp.runs) == 12  # 2 teachers and 2 students, 3 seeds


@pytest.mark.slow
def test_rerunning_continues_the_study(
    capsys: pytest.CaptureFixture[str], study3: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    out = Path(shutil.copytree(study3[0], tmp_path / "out"))  # a moved OUT keeps its study
    path = tune_file(tmp_path, "student")
    r = icckd(capsys, "tune", str(path), "--out", str(out), "--n-trials", "4", "--format", "json")
    assert r.code == 0, r.err
    assert sorted(t["number"] for t in r.json()["trials"]) == [0, 1, 2, 3]  # 4 after 3 runs 1
    assert r.err.count("trial 3:") == 1 and "trial 0:" not in r.err
    r = icckd(capsys, "tune", str(path), "--out", str(out), "--n-trials", "4")
    assert r.code == 0 and "trial " not in r.err  # nothing left to run
    assert "best: trial" in r.out and "wrote" in r.out


class AlwaysPrune(optuna.pruners.BasePruner):  # type: ignore[misc]
    """A pruner that prunes every trial at its first report."""

    def prune(self, study: Any, trial: Any) -> bool:
        return True


@pytest.mark.slow
def test_a_pruned_trial_keeps_its_folder_and_is_listed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sampling, "make_pruner", lambda *args: AlwaysPrune())
    path = tune_file(tmp_path, "teacher", n=1, epochs=2)
    r = icckd(capsys, "tune", str(path), "--out", str(tmp_path / "out"), "--format", "json")
    assert r.code == 0, r.err
    (t,) = r.json()["trials"]
    assert t["state"] == "pruned" and t["value"] is None and r.json()["best"] is None
    assert "-> pruned (at step 1, val top-1 " in r.err
    run = Path(t["run_dir"]) / "teacher"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # stopped after epoch 1 of 2
    assert (run / "config.json").is_file()
    assert not (tmp_path / "out" / "best-teacher.toml").exists()
    r = icckd(capsys, "tune", str(path), "--out", str(tmp_path / "out"))
    assert "no trial completed" in r.out and "importances need 2 or more" in r.out


@pytest.mark.slow
def test_a_diverging_trial_fails_and_the_study_goes_on(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = runs.train_teacher, []

    def first_diverges(cfg: TrainTeacherConfig, *args: Any, **kw: Any) -> Any:
        calls.append(cfg.out)
        if len(calls) == 1:  # the NaN guard, for real: lr 1e9 blows the loss up
            cfg = cfg.model_copy(update={"lr": 1e9})
        return real(cfg, *args, **kw)

    monkeypatch.setattr(runs, "train_teacher", first_diverges)
    path = tune_file(tmp_path, "teacher", n=2)
    r = icckd(capsys, "tune", str(path), "--out", str(tmp_path / "out"), "--format", "json")
    assert r.code == 0, r.err
    trials = {t["number"]: t for t in r.json()["trials"]}
    assert trials[0]["state"] == "failed" and trials[1]["state"] == "complete"
    assert "trial 0: " in r.err and "-> failed (diverged: the loss part" in r.err
    assert r.json()["best"]["number"] == 1
    assert counted_numbers(journal_study(tmp_path / "out")) == [0, 1]  # a diverged trial counts


@pytest.mark.slow
def test_two_workers_on_one_journal_finish_exactly_n_trials(tmp_path: Path) -> None:
    path, out = tune_file(tmp_path, "teacher", n=4), tmp_path / "out"
    procs = [worker(path, out, "--format", "json") for _ in range(2)]
    results = [json.loads(finished(p)[0]) for p in procs]
    study = journal_study(out)
    # exactly n: trials 0..3 counted; any that stepped aside came after them, unrun
    numbers = counted_numbers(study)
    assert numbers == [0, 1, 2, 3]
    assert all(t.number >= 4 for t in study.get_trials() if not study_mod.counted(t))
    ran = {t.user_attrs["pid"] for t in study.get_trials() if study_mod.counted(t)}
    assert ran <= {p.pid for p in procs}
    for t in study.get_trials():
        assert t.state.name in ("COMPLETE", "FAIL")  # none left running
        if t.state.name == "FAIL":  # only one that stepped aside unrun
            assert t.user_attrs["fail_reason"].startswith("surplus")
    last = max(results, key=lambda r: len(r["trials"]))
    assert sorted(t["number"] for t in last["trials"]) == numbers


@pytest.mark.slow
def test_a_killed_worker_leaves_no_trial_running(tmp_path: Path) -> None:
    path, out = tune_file(tmp_path, "teacher", n=1), tmp_path / "out"
    proc = killed_mid_trial(path, out)
    assert journal_study(out).trials[0].state.name == "RUNNING"
    _, err = finished(worker(path, out))  # the next worker fails it and replaces it
    study = journal_study(out)
    states = [(t.number, t.state.name) for t in study.trials]
    assert states == [(0, "FAIL"), (1, "COMPLETE")]
    assert study.trials[0].user_attrs["fail_reason"] == (
        f"its worker (process {proc.pid}) stopped mid-trial"
    )
    assert "trial 1:" in err


@pytest.mark.parametrize("damage", ["random", "zeroed", "truncated", "scrambled"])
def test_a_damaged_journal_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, damage: str
) -> None:
    path, out = tune_file(tmp_path, "teacher"), tmp_path / "out"
    from icckd_cli.commands.tune import load_tune

    spec = load_tune(path, {"out": out})  # a real journal: a study made and a trial asked
    study = study_mod.open_study(spec, study_mod.Storage(None, out), "tiny")
    study.ask()
    journal = out / "study.journal"
    data = journal.read_bytes()
    assert data.endswith(b"\n")
    bad = {"random": os.urandom(len(data)), "zeroed": bytes(len(data)), "truncated": data[:-7],
           "scrambled": b"not a record\n" + data}  # fmt: skip
    journal.write_bytes(bad[damage])
    r = icckd(capsys, "tune", str(path), "--out", str(out))
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1, r.err
    assert r.err.startswith(f"error: the study journal {journal.resolve()} ")
    assert journal.read_bytes() == bad[damage]  # nothing appended to it


def test_a_trial_that_finds_n_trials_before_it_steps_aside(tmp_path: Path) -> None:
    from icckd_cli.commands.tune import load_tune
    from icckd_cli.commands.tune.trial import Objective, Surplus

    spec = load_tune(tune_file(tmp_path, "teacher", n=2), {"out": tmp_path / "out"})
    study = study_mod.open_study(spec, study_mod.Storage(None, tmp_path / "out"), "tiny")
    first, second = study.ask(), study.ask()  # two trials running on other workers
    third = study.ask()  # asked at the same moment as the second: one too many
    assert study_mod.taken(study, before=third.number) == 2
    with pytest.raises(Surplus):
        Objective(spec, lambda event, info: None)(third)
    assert third.user_attrs["uncounted"] is True
    assert third.user_attrs["fail_reason"].startswith("surplus")
    assert not (tmp_path / "out" / "trials").exists()  # nothing run
    study.tell(third, state=optuna.trial.TrialState.FAIL)
    study.tell(first, 50.0)
    assert study_mod.taken(study) == 2  # the second still running counts; the third never
    assert [t.number for t in study.get_trials() if study_mod.counted(t)] == [0, 1]
    assert second.number == 1


def test_an_interrupted_trial_does_not_count_and_a_rerun_replaces_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icckd_cli.base.errors import Interrupted

    real = runs.train_teacher

    def interrupted(*args: Any, **kw: Any) -> Any:
        raise Interrupted()  # what Ctrl-C in the middle of a run raises

    monkeypatch.setattr(runs, "train_teacher", interrupted)
    path, out = tune_file(tmp_path, "teacher", n=1), tmp_path / "out"
    r = icckd(capsys, "tune", str(path), "--out", str(out))
    assert r.code == 130
    assert "interrupted: the current trial does not count" in r.err
    monkeypatch.setattr(runs, "train_teacher", real)
    r = icckd(capsys, "tune", str(path), "--out", str(out), "--format", "json")
    assert r.code == 0, r.err
    states = {t["number"]: t["state"] for t in r.json()["trials"]}
    assert states == {0: "failed", 1: "complete"}
    assert journal_study(out).trials[0].user_attrs["fail_reason"] == "interrupted"


def test_another_study_in_the_same_out_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, out = tune_file(tmp_path, "teacher"), tmp_path / "out"
    spec_out = {"out": out}
    from icckd_cli.commands.tune import claim_out, load_tune

    storage = study_mod.Storage(None, out)
    study_mod.open_study(load_tune(path, spec_out), storage, "first")
    claim_out(out, "first", storage, write=True)
    r = icckd(capsys, "tune", str(path), "--out", str(out), "--study-name", "second")
    assert r.code == 2
    assert r.err.strip() == (
        f"error: {out} holds the trials of study 'first' in study.journal; pass another --out "
        "for study 'second'"
    )


def test_a_worker_starts_no_trial_after_its_timeout(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, out = tune_file(tmp_path, "teacher"), tmp_path / "out"
    r = icckd(capsys, "tune", str(path), "--out", str(out), "--timeout", "1e-9")
    assert r.code == 0, r.err
    assert "--timeout 1e-09 s passed: no further trial starts here" in r.err
    assert "no trial completed" in r.out and not (out / "trials").exists()


def test_a_worker_that_ends_beside_a_live_worker_s_trial_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import socket

    from icckd_cli.commands.tune import Running, load_tune
    from icckd_cli.commands.tune.study import still_running

    path, out = tune_file(tmp_path, "teacher", n=1), tmp_path / "out"
    storage = study_mod.Storage(None, out)
    study = study_mod.open_study(load_tune(path, {"out": out}), storage, "tiny")
    trial = study.ask()  # another worker's trial, alive (this very process)
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    assert still_running(study, storage) == [Running(0, socket.gethostname(), os.getpid())]
    r = icckd(capsys, "tune", str(path), "--out", str(out), "--n-trials", "1")
    assert r.code == 0, r.err
    assert r.err.splitlines() == [
        f"trial 0 is still running (worker process {os.getpid()} on {socket.gethostname()}); "
        f"the summary shows it as running: rerun once that worker ends: icckd tune {path} "
        f"--out {out} --n-trials 1"
    ]
    assert [t.state.name for t in journal_study(out).trials] == ["RUNNING"]  # left to it
