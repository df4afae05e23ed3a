"""experiment and quickstart: the teacher x student x seed matrix in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from icckd_cli.base.errors import INTERRUPTED
from icckd_cli.base.torchvision_check import check_torchvision
from icckd_cli.cli.common import (
    Device,
    Format,
    Opt,
    Tensorboard,
    _format,
    app,
    handle_errors,
)
from icckd_cli.cli.executor import Executor, ExecutorWorkers, NoWait
from icckd_cli.presentation import console, tables
from icckd_cli.presentation.experiment_progress import ExperimentProgress

Latency = Annotated[
    bool | None,
    Opt(
        "--latency/--no-latency",
        help="Time each architecture's batch-1 latency for the cost table (default: on).",
    ),
]


def _experiment(exp: Any, fmt: str, dry_run: bool = False, wait: bool = True) -> None:
    """Shared body of experiment and quickstart: run the matrix, render the table."""
    from icckd_cli.commands.experiment.markdown import result_tables
    from icckd_cli.commands.experiment.matrix import RunsFailed, plan_states, run_experiment
    from icckd_cli.training import distributed as dist
    from icckd_cli.training.engine import Interrupted

    if dry_run:
        tables.experiment_plan(plan_states(exp))
        return
    if exp.needs_torchvision():
        check_torchvision()  # before hours of training, not at the first evaluation after them
    dist.init_from_env()  # under torchrun every run of the matrix is data-parallel
    progress = ExperimentProgress(exp.options.name)
    quiet = not dist.is_main()
    failed: RunsFailed | None = None
    try:
        results = run_experiment(exp, (lambda event, info: None) if quiet else progress, wait)
    except RunsFailed as exc:  # the tables of the others first, then the one line, exit 1
        results, failed = exc.results, exc
    except Interrupted:
        progress.close()
        if quiet:
            raise typer.Exit(INTERRUPTED) from None
        console.note(
            "interrupted: finished runs are kept and the current one saved its state; run the "
            "same command again to continue"
        )
        raise typer.Exit(INTERRUPTED) from None
    finally:
        progress.close()
    if results is None and not wait and not quiet:  # --no-wait: runs still in their jobs
        console.note(
            f"submitted to Slurm (logs in {Path(exp.options.out) / 'executor'}); run the same "
            "command again to follow the jobs and collect the results"
        )
    if quiet or results is None:
        return
    doc = results.to_json()
    if fmt == "json":
        console.print_json(doc)
    else:
        files = ["results.json", "results.md", *(f["file"] for f in results.figures or [])]
        if results.cost.figure:
            files.append(results.cost.figure)
        written = [str(Path(exp.options.out) / f) for f in files]
        tables.experiment_tables(result_tables(doc), written)
    if failed is not None:
        raise failed


@app.command()
@handle_errors
def experiment(
    config: Annotated[Path, typer.Argument(help="Experiment TOML file (see examples/).")],
    out: Annotated[Path | None, Opt(help="Experiment folder (default: out in the file).")] = None,
    device: Device = None,
    dry_run: Annotated[
        bool, Opt("--dry-run", help="List the runs and which are done; train nothing.")
    ] = False,
    tensorboard: Tensorboard = None,
    latency: Latency = None,
    executor: Executor = None,
    workers: ExecutorWorkers = None,
    no_wait: NoWait = False,
    fmt: Format = "table",
) -> None:
    """Teachers x student methods x seeds in one resumable command, with one table."""
    from icckd_cli.commands.experiment import load_experiment

    fmt = _format(fmt)
    overrides = {"out": out, "device": device, "tensorboard": tensorboard, "latency": latency}
    where = {"kind": executor, "workers": workers}
    _experiment(load_experiment(config, overrides, where), fmt, dry_run, not no_wait)


@app.command()
@handle_errors
def quickstart(
    out: Annotated[Path | None, Opt(help="Experiment folder.")] = Path("icckd-quickstart"),
    device: Device = None,
    tensorboard: Tensorboard = None,
    latency: Latency = None,
    fmt: Format = "table",
) -> None:
    """On digits: what KD from a CE or intra-class teacher adds to a small-data student."""
    from icckd_cli.commands.experiment import quickstart_experiment

    fmt = _format(fmt)
    overrides = {"out": out, "device": device, "tensorboard": tensorboard, "latency": latency}
    _experiment(quickstart_experiment(overrides), fmt)
