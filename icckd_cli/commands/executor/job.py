"""One job is one run folder: idempotent, locked, resumable, requeued on a time limit.

A job started on a finished run does nothing; on a partial one it resumes from the state
the run saved. It holds an exclusive lock on run.lock in the run folder while it works, so
two jobs never train one folder: a second one (from a second driver, or a job that Slurm
started again) waits for the first and then finds the run finished. The lock is flock(2):
the kernel drops it when the holder exits in any way, kill -9 included.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError
from icckd_cli.training.rundir import MODEL_FILE, STATE_FILE

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "run.lock"


def folder_status(out: Path) -> str:
    """done (model saved), partial (resumable state saved) or new."""
    if (out / MODEL_FILE).exists():
        return "done"
    return "partial" if (out / STATE_FILE).exists() else "new"


@contextmanager
def run_lock(out: Path, name: str = LOCK_FILE) -> Iterator[None]:
    """Hold the folder's lock for the block, waiting while another process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def restarts() -> int:
    """How often Slurm has started this job again (a time limit, a preemption, a requeue)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


@dataclass
class RunJob:
    """The callable a worker process or a Slurm job runs: train one run folder to the end.

    `train(resume)` trains the run (resume: continue from its saved state). It is a
    picklable callable: submitit and the local workers carry it to another process.
    """

    label: str
    out: Path
    train: Callable[[bool], Any]
    max_requeues: int = 3
    threads: int | None = None  # CPU threads of this run; None: torch's default

    def finished(self) -> bool:
        """The run's model is saved."""
        return folder_status(self.out) == "done"

    def __call__(self) -> str:
        """Train the run unless it is finished: 'skipped' or 'trained'."""
        import torch

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        with run_lock(self.out):
            status = folder_status(self.out)
            if status == "done":
                return "skipped"
            if restarts() > self.max_requeues:
                raise IcckdError(
                    f"run {self.label} was started {restarts() + 1} times, more than "
                    f"max_requeues = {self.max_requeues} allows; raise max_requeues or "
                    "time_limit in [executor] and run the command again"
                )
            self.train(status == "partial")
        return "trained"

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit, at a time limit or a preemption: start this job again (it resumes)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
