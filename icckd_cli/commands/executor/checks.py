"""Bad executor settings refused in one line before anything is submitted or started."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from icckd_cli.base.errors import UsageError
from icckd_cli.settings.executor import ExecutorConfig

INSTALL = "pip install -e '.[slurm]'"


def submitit_module() -> Any:
    """The submitit package, or a one-line error naming the extra that installs it."""
    try:
        import submitit
    except ImportError:
        raise UsageError(
            f"--executor slurm needs the submitit package; install it with {INSTALL}"
        ) from None
    return submitit


def machine_gpus() -> int:
    """CUDA GPUs this process sees."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def partitions() -> list[str]:
    """The cluster's partitions as sinfo lists them (the default one without its '*')."""
    proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
        raise UsageError(f"sinfo cannot reach the Slurm controller ({why}); check SLURM_CONF")
    return [p.strip().rstrip("*") for p in proc.stdout.splitlines() if p.strip()]


def check_executor(config: ExecutorConfig) -> None:
    """Refuse settings the executor cannot honour, before any run is started or submitted."""
    if config.kind == "inprocess":
        if config.workers > 1:
            raise UsageError(
                f"--workers {config.workers} needs --executor local or slurm (inprocess runs "
                "one run at a time)"
            )
        return
    if config.kind == "local":
        if config.gpus_per_run > 1:
            raise UsageError(
                f"gpus_per_run = {config.gpus_per_run}: the local executor gives each run one "
                "GPU; set gpus_per_run = 1 (or 0)"
            )
        if config.gpus_per_run and not machine_gpus():
            raise UsageError(
                f"gpus_per_run = {config.gpus_per_run} but this machine has no GPU; set "
                "gpus_per_run = 0 (each run then uses threads_per_run CPU threads)"
            )
        return
    submitit_module()
    if shutil.which("sbatch") is None:
        raise UsageError(
            "--executor slurm needs sbatch on PATH; run on a Slurm login node, or start a "
            "single-node Slurm here with scripts/slurm-local.sh start DIR"
        )
    if config.partition is not None:
        known = partitions()
        if config.partition not in known:
            raise UsageError(
                f"unknown partition '{config.partition}'; sinfo lists: {', '.join(known)}"
            )
