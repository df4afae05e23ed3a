"""The local executor: runs in worker processes on this machine, `workers` at once.

Each worker is one long-lived process (worker.py) that runs jobs one after another, so
torch is imported and a data set decoded once per worker. Worker i sees one GPU
(CUDA_VISIBLE_DEVICES = i mod GPUs) where the machine has GPUs, else trains with
`threads_per_run` CPU threads (OMP_NUM_THREADS and torch's own setting), so that N runs side
by side share the cores rather than fight over them.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icckd_cli.commands.executor.worker import END
from icckd_cli.settings.executor import ExecutorConfig


@dataclass
class Handle:
    """A submitted run: its label, the executor's id for it, its log file."""

    label: str
    job_id: str
    log: Path


@dataclass
class _Waiting:
    handle: Handle
    job: Any  # a picklable callable with a label (driver.Job)
    after: list[str]


@dataclass
class _Slot:
    """One worker process and the job it runs now, if any."""

    gpu: int | None
    proc: subprocess.Popen | None = None
    job: tuple[str, Path] | None = None  # (job id, job file)


@dataclass
class LocalPool:
    """Worker processes on this machine; a job starts once the jobs it waits for ended."""

    config: ExecutorConfig
    folder: Path  # job files and logs
    gpus: int  # GPUs on this machine
    waiting: list[_Waiting] = field(default_factory=list)
    slots: list[_Slot] = field(default_factory=list)
    ended: dict[str, int] = field(default_factory=dict)  # job id -> exit code
    count: int = 0

    def __post_init__(self) -> None:
        gpus = self.gpus
        self.slots = [_Slot(i % gpus if gpus else None) for i in range(self.config.workers)]

    def submit(self, jobs: list[Any], after: list[Handle]) -> list[Handle]:
        """Queue the jobs of one stage; they start after every job of `after` ended."""
        handles = []
        for job in jobs:
            self.count += 1
            job_id = f"local-{self.count}"
            log = self.folder / "logs" / f"{job.label.replace('/', '-')}.log"
            handle = Handle(job.label, job_id, log)
            self.waiting.append(_Waiting(handle, job, [h.job_id for h in after]))
            handles.append(handle)
        return handles

    def state(self, handle: Handle) -> str:
        """queued, running or ended (see exit_code); a job this pool never had has ended."""
        if any(s.job is not None and s.job[0] == handle.job_id for s in self.slots):
            return "running"
        waiting = any(w.handle.job_id == handle.job_id for w in self.waiting)
        return "queued" if waiting else "ended"

    def exit_code(self, handle: Handle) -> int | None:
        """The job's exit code once it ended."""
        return self.ended.get(handle.job_id)

    def step(self) -> None:
        """Collect the jobs that ended, give waiting jobs to the free workers."""
        for slot in self.slots:
            self._collect(slot)
        for item in list(self.waiting):
            free = next((s for s in self.slots if s.job is None), None)
            if free is None:
                break
            if all(a in self.ended for a in item.after):
                self.waiting.remove(item)
                self._start(free, item)

    def stop(self) -> None:
        """Stop every worker (SIGTERM: a run in progress saves its state) and wait for them."""
        self.waiting.clear()
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.terminate()
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.wait()
                slot.proc = None

    def close(self) -> None:
        """Let the idle workers end (their input closes) and wait for them."""
        for slot in self.slots:
            if slot.proc is not None:
                assert slot.proc.stdin is not None
                slot.proc.stdin.close()
                slot.proc.wait()
                slot.proc = None

    def _collect(self, slot: _Slot) -> None:
        if slot.job is not None:
            job_id, job_file = slot.job
            end = job_file.with_name(job_file.name + END)
            if end.is_file():
                self.ended[job_id] = int(end.read_text())
                slot.job = None
            elif slot.proc is not None and slot.proc.poll() is not None:
                self.ended[job_id] = slot.proc.returncode or 1  # the worker died in the job
                slot.job = None
        if slot.proc is not None and slot.proc.poll() is not None:
            slot.proc = None  # started again for the next job

    def _start(self, slot: _Slot, item: _Waiting) -> None:
        jobs = self.folder / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        item.handle.log.parent.mkdir(parents=True, exist_ok=True)
        # the driver's pid in the name: two drivers on one experiment never share a file
        job_file = jobs / f"{os.getpid()}-{item.handle.job_id}.pkl"
        job_file.write_bytes(pickle.dumps(item.job))
        job_file.with_name(job_file.name + END).unlink(missing_ok=True)  # a reused pid's
        if slot.proc is None:
            slot.proc = self._worker(self.slots.index(slot), slot.gpu)
        assert slot.proc.stdin is not None
        slot.proc.stdin.write(f"{job_file}\t{item.handle.log}\n")
        slot.proc.stdin.flush()
        slot.job = (item.handle.job_id, job_file)

    def _worker(self, index: int, gpu: int | None) -> subprocess.Popen:
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        threads = str(self.config.threads_per_run)
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        # the worker's own output, outside any job (a failed start, say)
        with open(self.folder / "logs" / f"local-worker-{index}.log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "icckd_cli.commands.executor.worker"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
            )
