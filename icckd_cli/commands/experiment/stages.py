"""An experiment's matrix as stages of jobs, for the local and slurm executors.

    1. teachers and the student alone     (none needs another run)
    2. one student per teacher-output store, which writes the store once
    3. every other student                (reads its store, or its teacher, in parallel)

A matched student (match_teachers = true) finds its teacher's snapshot when its job starts:
by then stage 1 has ended. Each job trains exactly as the in-process loop would, so the
weights are the same.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError
from icckd_cli.base.events import Callback
from icckd_cli.commands.executor.driver import Outcome, Stage, drive
from icckd_cli.commands.executor.job import RunJob
from icckd_cli.commands.experiment.plan import Experiment, Run
from icckd_cli.settings.executor import ExecutorConfig

FOLDER = "executor"  # under the experiment's OUT: the record, the job files, the logs


def experiment_stages(exp: Experiment, config: ExecutorConfig) -> list[Stage]:
    """The matrix's runs in the stages they may run in, each run one job."""
    first = [r for r in exp.runs if r.kind != "student"]
    students = [r for r in exp.runs if r.kind == "student"]
    writers: dict[Path, Run] = {}
    for run in students:  # in plan order, as in process: the first student writes the store
        cache = run.teacher_cache
        if cache is not None:
            writers.setdefault(Path(cache), run)
    second = list(writers.values())
    third = [r for r in students if r not in second]
    threads = None if config.gpus_per_run else config.threads_per_run
    if config.kind == "slurm":
        threads = config.cpus_per_run

    def jobs(runs: list[Run]) -> list[RunJob]:
        train = functools.partial(train_run, exp)
        return [
            RunJob(r.label, r.out, functools.partial(train, r.label), config.max_requeues, threads)
            for r in runs
        ]

    stages = [
        Stage("teachers and baselines", jobs(first)),
        Stage("teacher-output stores", jobs(second)),
        Stage("students", jobs(third)),
    ]
    return [s for s in stages if s.jobs]


def run_stages(
    exp: Experiment, config: ExecutorConfig, callback: Callback, wait: bool = True
) -> Outcome:
    """Submit the matrix's unfinished runs to the executor and (wait) follow them to the end."""
    stages = experiment_stages(exp, config)
    callback("plan", {"total": len(exp.runs), "done": sum(r.status() == "done" for r in exp.runs)})
    outcome = drive(stages, config, Path(exp.options.out) / FOLDER, callback, wait)
    for label, log in outcome.failed.items():
        callback("warning", {"message": f"run {label} failed; its log: {log}"})
    return outcome


def train_run(exp: Experiment, label: str, resume: bool) -> None:
    """Train one run of the matrix in this process (a worker's or a Slurm job's)."""
    from icckd_cli.commands import runs as runner
    from icckd_cli.commands.experiment.matched.plan import resolve_teacher

    run = next(r for r in exp.runs if r.label == label)
    resolve_teacher(exp, run, {})  # a matched student: its teacher's snapshot, now it exists
    train = runner.distill if run.kind == "student" else runner.train_teacher
    try:
        result = train(run.config, log_event, resume=resume)  # type: ignore[arg-type]
    except IcckdError as exc:
        raise type(exc)(f"run {run.label}: {exc.message}") from None
    print(f"{label}: top-1 {result.final['top1']:.2f} in {result.elapsed:.0f} s", flush=True)


def log_event(event: str, info: dict[str, Any]) -> None:
    """A job's progress, for its log: one JSON line per epoch and per warning."""
    if event in ("epoch", "warning", "recipe", "teacher_cache"):
        print(json.dumps({"event": event, **info}, default=str), flush=True)
