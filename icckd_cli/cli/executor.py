"""The options of `experiment` and `tune` that say where their runs train (docs/distributed.md)."""

from __future__ import annotations

from typing import Annotated

from icckd_cli.cli.common import Opt

Executor = Annotated[
    str | None,
    Opt(
        "--executor",
        help="inprocess (one run after another here, the default), local (worker processes on "
        "this machine) or slurm (jobs through submitit); overrides [executor] kind.",
    ),
]
ExecutorWorkers = Annotated[
    int | None,
    Opt(help="Runs at once (local) or tuning workers (local, slurm); overrides [executor]."),
]
NoWait = Annotated[
    bool,
    Opt(
        "--no-wait",
        help="slurm: submit and return; the same command later collects what has finished.",
    ),
]
