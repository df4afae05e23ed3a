"""The slurm executor: each stage of runs is one job array, submitted through submitit.

A stage's array starts once the arrays it depends on have ended (Slurm's afterany
dependency), so `--no-wait` can submit every stage at once. The driver follows the jobs with
squeue (it needs no accounting database) and reads the outcome from the run folders.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError
from icckd_cli.commands.executor.checks import submitit_module
from icckd_cli.commands.executor.local import Handle
from icckd_cli.settings.executor import ExecutorConfig


@dataclass
class SlurmPool:
    """Job arrays on a Slurm cluster; the submission logs go to `folder`."""

    config: ExecutorConfig
    folder: Path
    queue: dict[str, str] = field(default_factory=dict)  # job id -> its state in squeue

    def submit(self, jobs: list[Any], after: list[Handle]) -> list[Handle]:
        """Submit one stage as a job array, to start after every job of `after` ended."""
        submitit = submitit_module()
        cfg = self.config
        executor = submitit.SlurmExecutor(self.folder / "%j", max_num_timeout=cfg.max_requeues)
        params: dict[str, Any] = {
            "time": cfg.time_limit,
            "cpus_per_task": cfg.cpus_per_run,
            "array_parallelism": cfg.array_parallelism,
            "job_name": "icckd",
            "setup": [f"export OMP_NUM_THREADS={cfg.cpus_per_run}"],
        }
        optional = {
            "partition": cfg.partition,
            "account": cfg.account,
            "qos": cfg.qos,
            "constraint": cfg.constraint,
            "gpus_per_node": cfg.gpus_per_run or None,
            "mem": f"{int(cfg.mem_gb * 1024)}MB" if cfg.mem_gb else None,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        if cfg.sbatch:
            params["additional_parameters"] = cfg.sbatch_parameters()
        ids = sorted({h.job_id.split("_")[0] for h in after})
        if ids:
            params["dependency"] = "afterany:" + ":".join(ids)
        executor.update_parameters(**params)
        try:
            submitted = executor.submit_array(jobs)
        except Exception as exc:  # submitit raises its own error types with sbatch's output
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise IcckdError(f"sbatch refused the jobs: {first}") from None
        self.step()  # a job just submitted is in squeue, not ended
        pairs = zip(jobs, submitted, strict=True)
        return [Handle(j.label, s.job_id, Path(s.paths.stdout)) for j, s in pairs]

    def step(self) -> None:
        """Ask squeue once which of the jobs are still queued or running."""
        proc = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:  # the controller is busy or away: keep the last answer
            return
        self.queue = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.strip())

    def state(self, handle: Handle) -> str:
        """queued, running or ended, as squeue says (a requeued job is queued again)."""
        found = self.queue.get(handle.job_id)
        if found is None:
            return "ended"
        return "running" if found in ("RUNNING", "COMPLETING") else "queued"

    def exit_code(self, handle: Handle) -> int | None:
        """Not known without accounting; the run folder tells whether the run finished."""
        return None

    def stop(self) -> None:
        """Leave the jobs alone: they run on without the driver."""

    def close(self) -> None:
        """Nothing to end: the jobs are Slurm's."""
