"""tune: a setting chosen on the validation split, by Optuna, with workers sharing a study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from icckd_cli.base.errors import INTERRUPTED
from icckd_cli.cli.common import (
    Device,
    Format,
    Opt,
    _format,
    app,
    handle_errors,
)
from icckd_cli.cli.executor import Executor, ExecutorWorkers
from icckd_cli.presentation import console


def _progress(fmt: str) -> Any:
    """A line per finished trial on stderr (also with --format json: stdout stays JSON)."""
    from icckd_cli.commands.tune.results import trial_row
    from icckd_cli.presentation.tune import trial_line

    def progress(event: str, info: dict[str, Any]) -> None:
        if event == "trial":
            t = info["trial"]
            reason = t.user_attrs.get("fail_reason")
            trial_line(trial_row(t), reason, info["time"])
        elif event == "warning":  # a tuning worker in a process or job that stopped early
            console.note(info["message"])
        elif event == "timeout":
            console.note(f"--timeout {info['timeout']:g} s passed: no further trial starts here")

    return progress


@app.command()
@handle_errors
def tune(
    config: Annotated[Path, typer.Argument(help="Tune TOML file (see docs/tuning.md).")],
    out: Annotated[
        Path | None, Opt(help="Study folder: trials, journal, best-teacher.toml, confirm.toml.")
    ] = None,
    n_trials: Annotated[
        int | None, Opt(help="Trials of the whole study, over every worker (default: the file's).")
    ] = None,
    timeout: Annotated[
        float | None, Opt(help="Start no trial after this many seconds (this worker).")
    ] = None,
    storage: Annotated[
        str | None,
        Opt(
            help="SQLAlchemy URL of a shared study, e.g. postgresql://u:p@host/db (default: "
            "$ICCKD_TUNE_STORAGE, else a journal file in OUT; the password may come from "
            "$PGPASSWORD)."
        ),  # fmt: skip
    ] = None,
    study_name: Annotated[
        str | None, Opt(help="The study's name in its storage (default: the file's stem).")
    ] = None,
    device: Device = None,
    plot: Annotated[Path | None, Opt(help="Folder of the figures (default: OUT).")] = None,
    executor: Executor = None,
    workers: ExecutorWorkers = None,
    fmt: Format = "table",
) -> None:
    """Search teacher and student settings on the validation split (Optuna); workers share it."""
    from icckd_cli.commands.tune import (
        default_study_name,
        load_tune,
        overrides,
        rerun_command,
        run_tune,
    )
    from icckd_cli.training.engine import Interrupted

    fmt = _format(fmt)
    given = overrides({"out": out, "n_trials": n_trials, "timeout": timeout, "device": device})
    spec = load_tune(config, given, {"kind": executor, "workers": workers})
    name = study_name or default_study_name(config)
    try:
        tuned = run_tune(spec, name, storage, _progress(fmt), plot)
    except Interrupted:
        console.note(
            "interrupted: the current trial does not count; run the same command again to go on"
        )
        raise typer.Exit(INTERRUPTED) from None
    if tuned.running:
        from icckd_cli.presentation.tune import still_running_line

        rerun = rerun_command(config, given, study_name, storage)
        for r in tuned.running:
            worker = f"worker process {r.pid} on {r.host}" if r.pid else "its worker"
            still_running_line(r.number, worker, rerun, r.silent_s, r.grace_s, r.free_at)
    if fmt == "json":
        console.print_json(tuned.result)
        return
    from icckd_cli.presentation.tune import trials_table, written

    trials_table(tuned.result, tuned.reasons)
    written(tuned.files)
