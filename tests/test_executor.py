"""The executor's parts: its settings, its refusals, one job per run folder, the two pools."""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.commands.executor.checks import check_executor
from icckd_cli.commands.executor.job import LOCK_FILE, RunJob, folder_status
from icckd_cli.commands.executor.local import Handle, LocalPool
from icckd_cli.settings.executor import ExecutorConfig, parse_executor


def fake_train(out: Path, pause: float, resume: bool) -> None:
    """A stand-in run: appends to calls.txt what it was asked, then finishes the folder."""
    with open(out / "calls.txt", "a") as f:
        f.write(f"{'resume' if resume else 'train'} {os.environ.get('OMP_NUM_THREADS')}\n")
    with open(out / "gpu.txt", "w") as f:
        f.write(os.environ.get("CUDA_VISIBLE_DEVICES", "none"))
    time.sleep(pause)
    (out / "model.safetensors").write_bytes(b"done")


def fake_job(out: Path, pause: float = 0.0) -> RunJob:
    return RunJob(out.name, out, functools.partial(fake_train, out, pause))


def wait(pool: object, handles: list[Handle], limit: float = 120) -> None:
    start = time.monotonic()
    pool.step()  # type: ignore[attr-defined]
    while not all(pool.state(h) == "ended" for h in handles):  # type: ignore[attr-defined]
        assert time.monotonic() - start < limit, "the jobs did not end"
        time.sleep(0.2)
        pool.step()  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- settings


def test_the_command_line_wins_over_the_table_and_the_default_is_inprocess() -> None:
    assert ExecutorConfig().kind == "inprocess"
    table = {"kind": "slurm", "workers": 4, "partition": "gpu"}
    cfg = parse_executor(table, {"kind": "local", "workers": None}, "exp.toml")
    assert (cfg.kind, cfg.workers, cfg.partition) == ("local", 4, "gpu")


@pytest.mark.parametrize(
    ("table", "cli", "message"),
    [
        ({}, {"workers": 0}, "invalid --workers 0: Input should be greater than or equal to 1"),
        (
            {"workers": 0},
            {},
            "invalid exp.toml: [executor]: workers 0: Input should be greater than or equal to 1",
        ),
        (
            {},
            {"kind": "cloud"},
            "invalid --executor 'cloud': choose one of inprocess, local, slurm",
        ),
        (
            {"partion": "gpu"},
            {},
            "exp.toml: [executor]: unknown key 'partion'. Did you mean: partition?",
        ),
        (
            {"sbatch": ["exclusive"]},
            {},
            "invalid exp.toml: [executor]: sbatch ['exclusive']: invalid sbatch directive "
            "'exclusive': write each as --name or --name=value, e.g. sbatch = "
            '["--exclusive", "--mail-type=END"]',
        ),
    ],
)
def test_bad_settings_are_refused_in_one_line(table: dict, cli: dict, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_executor(table, cli, "exp.toml")
    assert exc.value.message == message


def test_free_form_directives_become_sbatch_parameters() -> None:
    cfg = ExecutorConfig(
        kind="slurm", sbatch=["--exclusive", "--mail-type=END", "--gres=gpu:a100:2"]
    )
    assert cfg.sbatch_parameters() == {"exclusive": True, "mail_type": "END", "gres": "gpu:a100:2"}


# ----------------------------------------------------------------------------- refusals


def test_workers_need_an_executor_that_runs_several() -> None:
    with pytest.raises(UsageError, match=r"^--workers 2 needs --executor local or slurm"):
        check_executor(ExecutorConfig(workers=2))


def test_a_gpu_per_run_is_refused_on_a_machine_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("icckd_cli.commands.executor.checks.machine_gpus", lambda: 0)
    with pytest.raises(UsageError) as exc:
        check_executor(ExecutorConfig(kind="local", gpus_per_run=1))
    assert exc.value.message == (
        "gpus_per_run = 1 but this machine has no GPU; set gpus_per_run = 0 (each run then uses "
        "threads_per_run CPU threads)"
    )


def test_slurm_without_submitit_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now fails
    with pytest.raises(UsageError) as exc:
        check_executor(ExecutorConfig(kind="slurm"))
    assert exc.value.message == (
        "--executor slurm needs the submitit package; install it with pip install -e '.[slurm]'"
    )


def test_slurm_without_sbatch_on_path_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("submitit", reason="submitit is in the test extra")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match=r"^--executor slurm needs sbatch on PATH; run on a Slurm"):
        check_executor(ExecutorConfig(kind="slurm"))


def test_an_unknown_partition_is_refused_with_the_ones_sinfo_lists(slurm_cluster: Path) -> None:
    with pytest.raises(UsageError) as exc:
        check_executor(ExecutorConfig(kind="slurm", partition="gpu"))
    assert exc.value.message == "unknown partition 'gpu'; sinfo lists: debug"
    check_executor(ExecutorConfig(kind="slurm", partition="debug"))  # the one it has


# ----------------------------------------------------------------------------- one job


def test_a_finished_run_is_skipped_and_a_partial_one_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.safetensors").write_bytes(b"partial")
    assert folder_status(out) == "partial"
    assert fake_job(out)() == "trained"
    assert folder_status(out) == "done"
    assert fake_job(out)() == "skipped"
    assert (out / "calls.txt").read_text().split("\n")[0].startswith("resume")
    assert len((out / "calls.txt").read_text().splitlines()) == 1


def test_a_second_job_on_one_folder_waits_for_the_first_and_trains_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    outcomes: dict[str, str] = {}
    first = threading.Thread(target=lambda: outcomes.update(first=fake_job(out, 1.0)()))
    first.start()
    while not (out / "calls.txt").exists():  # the first holds the lock and trains
        time.sleep(0.01)
    outcomes["second"] = fake_job(out)()  # waits on run.lock, then finds the run finished
    first.join()
    assert outcomes == {"first": "trained", "second": "skipped"}
    assert (out / "calls.txt").read_text().splitlines() == [
        f"train {os.environ.get('OMP_NUM_THREADS')}"
    ]
    assert (out / LOCK_FILE).is_file()


def test_a_job_started_more_often_than_max_requeues_allows_stops(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SLURM_RESTART_COUNT", "4")
    with pytest.raises(IcckdError) as exc:
        fake_job(tmp_path / "run")()
    assert exc.value.message == (
        "run run was started 5 times, more than max_requeues = 3 allows; raise max_requeues or "
        "time_limit in [executor] and run the command again"
    )
    assert not (tmp_path / "run" / "calls.txt").exists()


def test_checkpoint_requeues_the_same_job() -> None:
    pytest.importorskip("submitit", reason="submitit is in the test extra")
    job = fake_job(Path("run"))
    assert job.checkpoint().function is job


# ----------------------------------------------------------------------------- the pools


def test_local_workers_run_a_stage_after_the_one_it_waits_for(tmp_path: Path) -> None:
    pool = LocalPool(ExecutorConfig(kind="local", workers=2, threads_per_run=3), tmp_path / "ex", 0)
    outs = [tmp_path / f"r{i}" for i in range(3)]
    for out in outs:
        out.mkdir()
    first = pool.submit([fake_job(outs[0], 1.0), fake_job(outs[1])], [])
    second = pool.submit([fake_job(outs[2])], first)
    pool.step()
    assert [pool.state(h) for h in first + second] == ["running", "running", "queued"]
    wait(pool, first + second)
    assert [pool.exit_code(h) for h in first + second] == [0, 0, 0]
    assert [(o / "calls.txt").read_text() for o in outs] == ["train 3\n"] * 3
    assert second[0].log.read_text() == "r2: trained\n"
    # the stage after started only once both before it had finished
    assert (outs[2] / "calls.txt").stat().st_mtime >= (
        outs[0] / "model.safetensors"
    ).stat().st_mtime


def test_slurm_arrays_run_on_the_local_cluster(slurm_cluster: Path, tmp_path: Path) -> None:
    pytest.importorskip("submitit", reason="submitit is in the test extra")
    from icckd_cli.commands.executor.slurm import SlurmPool

    pool = SlurmPool(ExecutorConfig(kind="slurm", cpus_per_run=1), tmp_path / "ex")
    outs = [tmp_path / f"r{i}" for i in range(3)]
    for out in outs:
        out.mkdir()
    first = pool.submit([fake_job(outs[0]), fake_job(outs[1])], [])
    second = pool.submit([fake_job(outs[2])], first)
    wait(pool, first + second)
    assert [folder_status(o) for o in outs] == ["done"] * 3
    assert [(o / "calls.txt").read_text() for o in outs] == ["train 1\n"] * 3
    assert "Job completed successfully" in second[0].log.read_text()
    assert (outs[2] / "calls.txt").stat().st_mtime >= (
        outs[1] / "model.safetensors"
    ).stat().st_mtime


def test_each_local_worker_sees_its_own_gpu(tmp_path: Path) -> None:
    pool = LocalPool(ExecutorConfig(kind="local", workers=2), tmp_path / "ex", gpus=2)
    outs = [tmp_path / f"r{i}" for i in range(3)]
    for out in outs:
        out.mkdir()
    handles = pool.submit([fake_job(o, 1.0) for o in outs[:2]], [])
    handles += pool.submit([fake_job(outs[2])], handles)
    wait(pool, handles)
    seen = [(o / "gpu.txt").read_text() for o in outs]
    assert sorted(seen[:2]) == ["0", "1"]  # side by side: one GPU each
    assert seen[2] == "0"  # alone afterwards: the first free one


def test_the_matrix_goes_out_in_three_stages() -> None:
    from icckd_cli.commands.experiment.stages import experiment_stages
    from tests.helpers import parse_experiment_text, tiny_experiment

    text = tiny_experiment(Path("/tmp/unused")) + '\n[[students]]\nmethod = "rkd"\n'
    exp = parse_experiment_text(text)
    stages = experiment_stages(exp, ExecutorConfig(kind="local"))
    assert [(s.name, [j.label for j in s.jobs]) for s in stages] == [
        ("teachers and baselines", ["teachers/ce/seed0", "teachers/icc/seed0", "baseline/seed0",
                                    "teachers/ce/seed1", "teachers/icc/seed1", "baseline/seed1"]),
        # the first student of each teacher-output store writes it, as in process
        ("teacher-output stores", ["students/ce/kd/seed0", "students/icc/kd/seed0",
                                   "students/ce/kd/seed1", "students/icc/kd/seed1"]),
        ("students", ["students/ce/rkd/seed0", "students/icc/rkd/seed0",
                      "students/ce/rkd/seed1", "students/icc/rkd/seed1"]),
    ]  # fmt: skip
    assert all(j.threads == 1 and j.max_requeues == 3 for s in stages for j in s.jobs)


def test_ctrl_c_in_the_driver_stops_the_workers_and_says_interrupted(tmp_path: Path) -> None:
    from icckd_cli.base.errors import Interrupted
    from icckd_cli.commands.executor.driver import Stage, drive

    out = tmp_path / "run"
    out.mkdir()

    def ctrl_c(seconds: float) -> None:
        while not (out / "calls.txt").exists():  # the run has started in its worker
            time.sleep(0.05)
        raise KeyboardInterrupt

    config = ExecutorConfig(kind="local")
    with pytest.raises(Interrupted):
        drive([Stage("one", [fake_job(out, 2.0)])], config, tmp_path / "ex", print, sleep=ctrl_c)
    time.sleep(3.0)  # a worker left running would have finished the run by now
    assert folder_status(out) == "new"
