"""The driver: submits the stages of runs, follows them, says which failed and where.

What it submitted is recorded in OUT/executor/jobs.json (run label -> job id and log), so a
driver started again (after `--no-wait`, or a second one on the same experiment) attaches to
the jobs still queued or running instead of submitting them twice, and submits again only
what ended unfinished. A lock on OUT/executor/driver.lock keeps two drivers from submitting
at once; the run folders' own locks (job.py) keep two jobs from training one folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from icckd_cli.base.atomic import write_text_atomic
from icckd_cli.base.errors import Interrupted
from icckd_cli.base.events import Callback
from icckd_cli.commands.executor.checks import machine_gpus
from icckd_cli.commands.executor.job import run_lock
from icckd_cli.commands.executor.local import Handle, LocalPool
from icckd_cli.settings.executor import ExecutorConfig

RECORD = "jobs.json"
DRIVER_LOCK = "driver.lock"
POLL_S = 2.0  # how often the driver looks at the jobs


class Job(Protocol):
    """What the driver needs of a job: a name, a folder for its log, whether it is done."""

    label: str
    out: Path

    def finished(self) -> bool: ...
    def __call__(self) -> str: ...


class Pool(Protocol):
    """What the driver needs of an executor: submit a stage, follow its jobs, stop."""

    def submit(self, jobs: list[Any], after: list[Handle]) -> list[Handle]: ...
    def step(self) -> None: ...
    def state(self, handle: Handle) -> str: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class Stage:
    """Runs that may run side by side once every run of the stages before has ended."""

    name: str
    jobs: Sequence[Job]


@dataclass
class Outcome:
    """What became of the runs: finished, and failed with their logs' paths."""

    done: list[str]
    failed: dict[str, Path]
    waiting: list[str]  # still queued or running (--no-wait)


def make_pool(config: ExecutorConfig, folder: Path) -> Pool:
    """The local or the slurm pool; jobs, logs and the record live in `folder`."""
    if config.kind == "local":
        return LocalPool(config, folder, machine_gpus())
    from icckd_cli.commands.executor.slurm import SlurmPool

    return SlurmPool(config, folder / "slurm")


def drive(
    stages: list[Stage],
    config: ExecutorConfig,
    folder: Path,
    callback: Callback,
    wait: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Submit what is not finished (attaching to what still runs), then follow it to the end.

    The caller has checked `config` (checks.check_executor) before any work.
    """
    pool = make_pool(config, folder)
    with run_lock(folder, DRIVER_LOCK):  # one driver submits at a time
        handles = _submit(stages, pool, folder / RECORD)
    jobs = [j for s in stages for j in s.jobs]
    try:
        while True:
            pool.step()
            counts, outcome = _tally(jobs, handles, pool)
            callback("jobs", counts)
            if not wait or not outcome.waiting:
                return outcome
            sleep(POLL_S)
    except KeyboardInterrupt:  # Ctrl-C: local workers save their runs' state; jobs run on
        pool.stop()
        raise Interrupted() from None
    except BaseException:
        pool.stop()
        raise
    finally:
        pool.close()


def _submit(stages: list[Stage], pool: Pool, record_file: Path) -> dict[str, Handle]:
    """Submit every unfinished run, stage after stage; attach to jobs recorded and alive."""
    record = _read_record(record_file)
    pool.step()
    handles: dict[str, Handle] = {}
    before: list[Handle] = []
    for stage in stages:
        todo = [j for j in stage.jobs if not j.finished()]
        live = {}
        for job in todo:  # a job of an earlier driver still queued or running: attach
            old = record.get(job.label)
            if old is not None and pool.state(old) != "ended":
                live[job.label] = old
        new = [j for j in todo if j.label not in live]
        after = [h for h in before if pool.state(h) != "ended"]
        submitted = pool.submit(new, after) if new else []
        handles.update(live)
        handles.update({h.label: h for h in submitted})
        before = [*live.values(), *submitted] or before
        record.update({h.label: h for h in submitted})
        _write_record(record_file, record)
    return handles


def _tally(
    jobs: list[Job], handles: dict[str, Handle], pool: Pool
) -> tuple[dict[str, int], Outcome]:
    outcome = Outcome([], {}, [])
    counts = {"total": len(jobs), "done": 0, "running": 0, "queued": 0, "failed": 0}
    for job in jobs:
        handle = handles.get(job.label)
        state = "ended" if handle is None else pool.state(handle)
        if state != "ended":
            counts[state] += 1
            outcome.waiting.append(job.label)
        elif job.finished():
            counts["done"] += 1
            outcome.done.append(job.label)
        else:
            counts["failed"] += 1
            outcome.failed[job.label] = handle.log if handle else job.out
    return counts, outcome


def _read_record(path: Path) -> dict[str, Handle]:
    try:
        raw = json.loads(path.read_text())
        return {k: Handle(k, v["job_id"], Path(v["log"])) for k, v in raw.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # none yet, or damaged: submitting again is safe (the run folders lock)


def _write_record(path: Path, record: dict[str, Handle]) -> None:
    shown: dict[str, Any] = {}
    for label, h in record.items():
        entry = asdict(h)
        shown[label] = {"job_id": entry["job_id"], "log": str(entry["log"])}
    write_text_atomic(path, json.dumps(shown, indent=2) + "\n")
