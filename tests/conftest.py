"""Shared test set-up: one thread (the machines are shared), a private data cache, and the
training runs that the tests of runs, run folders and resumable state share.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from icckd_cli.commands import runs
from icckd_cli.settings.config import TrainTeacherConfig, build
from icckd_cli.training.engine import Interrupted
from tests.helpers import TEACHER, sigint_at

# Several processes with 2 threads each on 2 cores slow torch down twentyfold; one is steady.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Decoded data sets go to a per-session cache, never the user's."""
    if "ICCKD_CACHE_DIR" not in os.environ:
        os.environ["ICCKD_CACHE_DIR"] = str(tmp_path_factory.mktemp("icckd-cache"))


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted teacher run (copy it before changing it)."""
    out = tmp_path_factory.mktemp("reference") / "teacher"
    runs.train_teacher(build(TrainTeacherConfig, {**TEACHER, "out": out}), lambda e, i: None)
    return out


@pytest.fixture(scope="session")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, stopped by SIGINT at step 4 of epoch 1 (copy it before changing it)."""
    out = tmp_path_factory.mktemp("interrupted") / "teacher"
    cfg = build(TrainTeacherConfig, {**TEACHER, "out": out})
    with pytest.raises(Interrupted):
        runs.train_teacher(cfg, sigint_at(0, 4))
    return out


SLURM_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm-local.sh"
SLURM_TOOLS = ("sbatch", "squeue", "sinfo", "scontrol", "slurmctld", "slurmd", "munged")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A single-node Slurm on this machine for the session (one per xdist worker: it starts
    in about a second); SLURM_CONF points at it while it runs."""
    missing = [t for t in SLURM_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"no Slurm here ({missing[0]} missing): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("the single-node Slurm of scripts/slurm-local.sh runs its daemons as root")
    folder = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(
        [str(SLURM_SCRIPT), "start", str(folder)], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"scripts/slurm-local.sh start failed: {started.stderr.strip()}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    try:
        yield folder
    finally:
        subprocess.run([str(SLURM_SCRIPT), "stop", str(folder)], check=False)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
