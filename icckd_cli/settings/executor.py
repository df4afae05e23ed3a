"""Where the runs of an experiment or a study execute: the [executor] table and --executor.

inprocess (the default) trains them one after another in this process; local starts
`workers` processes on this machine, each on one GPU or `threads_per_run` CPU threads;
slurm submits each run as a job through submitit. The command line wins over the file's table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from icckd_cli.base.errors import UsageError, suggest
from icckd_cli.settings.common import _Strict

EXECUTORS = ("inprocess", "local", "slurm")


class ExecutorConfig(_Strict):
    """The [executor] table: which executor, and the resources of one run."""

    kind: Literal["inprocess", "local", "slurm"] = "inprocess"
    # runs at once: local processes, or slurm tuning workers (an experiment's array
    # parallelism is array_parallelism)
    workers: int = Field(1, ge=1)
    threads_per_run: int = Field(1, ge=1)  # CPU threads of a run where it has no GPU
    gpus_per_run: int = Field(0, ge=0)  # local: 0 or 1 (one GPU per worker); slurm: any
    cpus_per_run: int = Field(1, ge=1)  # slurm: CPUs of a run's job
    mem_gb: float | None = Field(None, gt=0)  # slurm: memory of a run's job
    time_limit: int = Field(24 * 60, ge=1)  # slurm: minutes; a longer run is requeued, resumes
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = Field(256, ge=1)  # slurm: jobs of one stage running at once
    max_requeues: int = Field(3, ge=0)  # time limits and preemptions a run survives
    # free-form sbatch directives, e.g. ["--exclusive", "--mail-type=END"]
    sbatch: list[str] = Field(default_factory=list)

    @field_validator("sbatch")
    @classmethod
    def _directives(cls, values: list[str]) -> list[str]:
        for value in values:
            if not value.startswith("--") or len(value) < 3 or " " in value.split("=")[0]:
                raise ValueError(
                    f"invalid sbatch directive {value!r}: write each as --name or --name=value, "
                    'e.g. sbatch = ["--exclusive", "--mail-type=END"]'
                )
        return values

    def sbatch_parameters(self) -> dict[str, Any]:
        """The free-form directives as submitit's additional parameters (--flag -> True)."""
        params: dict[str, Any] = {}
        for value in self.sbatch:
            name, sep, arg = value[2:].partition("=")
            params[name.replace("-", "_")] = arg if sep else True
        return params


def parse_executor(
    table: Mapping[str, Any], overrides: Mapping[str, Any], source: str
) -> ExecutorConfig:
    """[executor] of a file under the command line's --executor/--workers; one-line errors."""
    values = {**table, **{k: v for k, v in overrides.items() if v is not None}}
    for key in values:
        if key not in ExecutorConfig.model_fields:
            hint = suggest(key, ExecutorConfig.model_fields) or " Check the spelling."
            raise UsageError(f"{source}: [executor]: unknown key '{key}'.{hint}")
    try:
        return ExecutorConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err.get("loc") else ""
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if overrides.get(key) is not None:  # the command line's option, by its own name
            where = "--executor" if key == "kind" else "--" + key.replace("_", "-")
        else:
            where = f"{source}: [executor]: {key}"
        shown = f" {values[key]!r}" if key in values else ""
        if key == "kind":
            msg = f"choose one of {', '.join(EXECUTORS)}"
        raise UsageError(f"invalid {where}{shown}: {msg}") from None
