"""Tuning workers in worker processes or as a Slurm job array: `--executor ... --workers N`.

Each worker joins the one study and runs trials until it holds n_trials, exactly as a
worker started by hand does (trial.py); the driver then sums the study up once. The
storage's URL reaches the workers through the environment ($ICCKD_TUNE_STORAGE), never
through a file, so its password is written nowhere (storage.py reads it back); a journal
needs no URL (it lives in OUT, which must be on a file system every worker sees).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icckd_cli.commands.executor.driver import Stage, drive
from icckd_cli.commands.tune.config import TuneFile
from icckd_cli.commands.tune.storage import ENV_STORAGE, GRACE, HEARTBEAT, Storage
from icckd_cli.commands.tune.study import fail_lost_trials, open_study, study_state, taken
from icckd_cli.settings.executor import ExecutorConfig

FOLDER = "executor"  # under OUT: the record, the job files, the workers' logs and marks
FINISHED = "finished"  # a worker's mark: it ran until the study held n_trials


@dataclass
class TuneWorker:
    """One worker of the study: trials until n_trials are taken, in whatever process runs it."""

    label: str
    out: Path  # its folder: the mark it leaves when it ends well
    tune: TuneFile
    study_name: str
    threads: int | None = None

    def finished(self) -> bool:
        """It ran to the end of the study (or of [tune]'s timeout)."""
        return (self.out / FINISHED).is_file()

    def __call__(self) -> str:
        """Join the study and run trials; 'finished' once the study holds n_trials."""
        import torch

        from icckd_cli.commands.tune import sampling
        from icckd_cli.commands.tune.trial import run_trials

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        storage = Storage.given(None, self.tune.options.out)  # the URL from the environment
        pruner = sampling.make_pruner(self.tune.options.pruner, steps(self.tune))
        sampler = sampling.make_sampler(self.tune, 0)
        study = open_study(self.tune, storage, self.study_name, sampler, pruner)
        run_trials(study, self.tune, storage, log_event)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / FINISHED).write_text("")
        return "finished"

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit, at a time limit or a preemption: start the worker again (its trial
        stopped uncounted; the study gives the next worker a new one)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def steps(tune: TuneFile) -> int:
    """The pruner's axis, as the in-process worker's (tune/__init__.py)."""
    from icckd_cli.commands.tune import steps as axis

    return axis(tune)


def log_event(event: str, info: dict[str, Any]) -> None:
    """A worker's progress, for its log: one line per trial started and ended."""
    if event == "trial_start":
        print(json.dumps({"event": event, **info}, default=str), flush=True)
    elif event == "trial":
        trial = info["trial"]
        print(f"trial {trial.number}: {trial.state.name} {trial.value}", flush=True)


@contextmanager
def storage_in_environment(url: str | None) -> Iterator[None]:
    """The storage's URL in this process's environment while the workers are started."""
    old = os.environ.get(ENV_STORAGE)
    if url is not None:
        os.environ[ENV_STORAGE] = url
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV_STORAGE, None)
        else:
            os.environ[ENV_STORAGE] = old


def run_workers(
    tune: TuneFile,
    study_name: str,
    url: str | None,
    config: ExecutorConfig,
    progress: Any,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Start `workers` workers of the study on the executor and wait for them all.

    A worker killed mid-trial leaves its trial RUNNING until the study notices (at once on a
    journal, by the process id; on PostgreSQL once its heartbeat is stale): the driver waits
    for that, then starts workers again to replace the trial, up to max_requeues rounds.
    """
    folder = Path(tune.options.out) / FOLDER
    threads = config.cpus_per_run if config.kind == "slurm" else config.threads_per_run
    for _ in range(config.max_requeues + 1):
        workers = []
        for i in range(config.workers):
            out = folder / "workers" / str(i)
            (out / FINISHED).unlink(missing_ok=True)  # each round starts its workers afresh
            workers.append(TuneWorker(f"worker-{i}", out, tune, study_name, threads))
        with storage_in_environment(url):
            outcome = drive([Stage("tuning workers", workers)], config, folder, progress)
        for label, log in outcome.failed.items():  # the study, not a worker, says what counts
            progress("warning", {"message": f"tuning worker {label} stopped early; its log: {log}"})
        if not outcome.failed or not _lost_trials_settled(tune, study_name, url, sleep):
            return


def _lost_trials_settled(
    tune: TuneFile, study_name: str, url: str | None, sleep: Callable[[float], None]
) -> bool:
    """Wait until no trial of the study is RUNNING (every worker has ended, so those are
    lost); True when the study then holds fewer than n_trials, so workers must go on."""
    storage = Storage.given(url, tune.options.out)
    study = open_study(tune, storage, study_name)
    deadline = time.monotonic() + GRACE + 3 * HEARTBEAT
    while True:
        fail_lost_trials(study, storage)
        running = study.get_trials(deepcopy=False, states=(study_state("RUNNING"),))
        if not running or time.monotonic() > deadline:
            break
        sleep(HEARTBEAT)
    # with [tune]'s timeout a study may end short of n_trials: only a lost trial is redone
    return taken(study) < tune.options.n_trials and tune.options.timeout is None
