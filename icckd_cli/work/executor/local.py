"""The local executor: runs in separate processes on this machine, `workers` at once.

Each worker process gets one GPU (CUDA_VISIBLE_DEVICES) where the machine has GPUs, else
`threads_per_run` CPU threads (OMP_NUM_THREADS and torch's own setting), so that N runs
side by side share the cores rather than fight over them.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
class LocalPool:
    """Worker processes on this machine; a job starts once the jobs it waits for ended."""

    config: ExecutorConfig
    folder: Path  # job files and logs
    gpus: int  # GPUs on this machine; worker i uses GPU i mod gpus
    waiting: list[_Waiting] = field(default_factory=list)
    running: dict[str, tuple[subprocess.Popen, int | None]] = field(default_factory=dict)
    ended: dict[str, int] = field(default_factory=dict)  # job id -> exit code
    count: int = 0

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
        if handle.job_id in self.running:
            return "running"
        waiting = any(w.handle.job_id == handle.job_id for w in self.waiting)
        return "queued" if waiting else "ended"

    def exit_code(self, handle: Handle) -> int | None:
        """The worker's exit code once it ended."""
        return self.ended.get(handle.job_id)

    def step(self) -> None:
        """Reap the workers that ended, start waiting jobs on the free slots."""
        for job_id, (proc, _) in list(self.running.items()):
            if proc.poll() is not None:
                self.ended[job_id] = proc.returncode
                del self.running[job_id]
        for item in list(self.waiting):
            if len(self.running) >= self.config.workers:
                break
            if all(a in self.ended for a in item.after):
                self.waiting.remove(item)
                gpu = self._free_gpu()
                self.running[item.handle.job_id] = (self._start(item, gpu), gpu)

    def stop(self) -> None:
        """Stop every worker (SIGTERM: each saves its run's state) and wait for them."""
        for proc, _ in self.running.values():
            proc.terminate()
        for proc, _ in self.running.values():
            proc.wait()
        self.waiting.clear()

    def _free_gpu(self) -> int | None:
        if not self.gpus:
            return None
        taken = {gpu for _, gpu in self.running.values()}
        return next((g for g in range(self.gpus) if g not in taken), len(self.running) % self.gpus)

    def _start(self, item: _Waiting, gpu: int | None) -> subprocess.Popen:
        jobs = self.folder / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        item.handle.log.parent.mkdir(parents=True, exist_ok=True)
        path = jobs / f"{os.getpid()}-{item.handle.job_id}.pkl"  # two drivers never share one
        path.write_bytes(pickle.dumps(item.job))
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        threads = str(self.config.threads_per_run)
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        with open(item.handle.log, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "icckd_cli.work.executor.worker", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
