"""`icckd tune`: a setting chosen on the validation split, by Optuna, on one machine or many.

config.py reads and validates the tune file, storage.py opens the study's storage (a
journal file in OUT, or PostgreSQL for workers on many machines) and shows it without its
password, study.py opens the study and decides which trials count, trial.py runs a trial as
ordinary runs in OUT/trials/NNNN/, results.py sums the study up (and reads the best trial's
test top-1, once), files.py writes best-teacher.toml and confirm.toml.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icckd_cli.base.atomic import write_text_atomic
from icckd_cli.base.errors import UsageError
from icckd_cli.commands.executor.checks import check_executor
from icckd_cli.commands.tune import sampling
from icckd_cli.commands.tune.config import VAL_REFUSAL, TuneFile, load_tune, parse_tune
from icckd_cli.commands.tune.files import BEST_TEACHER, CONFIRM, write_best_files
from icckd_cli.commands.tune.results import reasons, summary
from icckd_cli.commands.tune.storage import (
    JOURNAL_FILE,
    Storage,
    mask_url,
    optuna_module,
    same_place,
)
from icckd_cli.commands.tune.study import Running, open_study, still_running
from icckd_cli.commands.tune.trial import Progress, param_name, run_trials
from icckd_cli.commands.tune.workers import run_workers

__all__ = ["BEST_TEACHER", "CONFIRM", "JOURNAL_FILE", "VAL_REFUSAL", "Running", "Tuned",
           "TuneFile", "load_tune", "parse_tune", "rerun_command", "run_tune",
           "optuna_module"]  # fmt: skip
MARK_FILE = "study.json"  # which study OUT's trial folders belong to


@dataclass
class Tuned:
    """A finished (or stopped) study: the JSON summary, why trials failed, the files written,
    the trials still running in other (or dead) workers."""

    result: dict[str, Any]
    reasons: dict[int, str]
    files: list[Path] = field(default_factory=list)
    running: list[Running] = field(default_factory=list)


def default_study_name(path: Path) -> str:
    """The study a file makes unless --study-name says otherwise: its file name's stem."""
    return Path(path).stem


def claim_out(out: Path, name: str, storage: Storage, write: bool) -> None:
    """OUT holds the trial folders of one study; another study is refused before any work
    (write: mark OUT as this study's, once its storage opened)."""
    mark = Path(out) / MARK_FILE
    # a journal lives in OUT itself: a moved or copied OUT keeps its study
    here = {"study_name": name, "storage": storage.shown if storage.url else JOURNAL_FILE}
    if mark.is_file():
        try:
            found = json.loads(mark.read_text())
            if not isinstance(found, dict):
                raise ValueError("not an object")
        except (OSError, ValueError):
            raise UsageError(
                f"{mark} is damaged; delete it if {out} holds no other study"
            ) from None
        if found.get("study_name") != name or not same_place(
            str(found.get("storage")), here["storage"]
        ):
            raise UsageError(
                f"{out} holds the trials of study '{found.get('study_name')}' in "
                f"{mask_url(str(found.get('storage')))}; pass another --out for study '{name}'"
            )
        return
    if not write:
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(mark, json.dumps(here, indent=2) + "\n")


def run_tune(
    tune: TuneFile,
    study_name: str,
    storage_url: str | None,
    progress: Progress,
    plot: Path | None = None,
) -> Tuned:
    """Run trials until the study holds n_trials, then sum it up and write its files."""
    optuna_module()  # a missing extra fails before anything is written
    check_executor(tune.executor)
    storage = Storage.given(storage_url, tune.options.out)
    claim_out(tune.options.out, study_name, storage, write=False)
    check_data(tune)
    sampler = sampling.make_sampler(tune, 0)
    study = open_study(
        tune, storage, study_name, sampler, sampling.make_pruner(tune.options.pruner, steps(tune))
    )
    claim_out(tune.options.out, study_name, storage, write=True)
    if tune.executor.kind == "inprocess":
        run_trials(study, tune, storage, progress)
    else:  # --workers N workers in worker processes or Slurm jobs (workers.py)
        run_workers(tune, study_name, storage.url, tune.executor, progress)
    tuned = finish(study, tune, storage, plot)
    tuned.running = still_running(study, storage)
    return tuned


def check_data(tune: TuneFile) -> None:
    """Each role's data loads and its validation split leaves images to train on, before
    the study or OUT is made: a trial would fail on it, and every trial after it."""
    import torch

    from icckd_cli.commands.inputs import load_data

    for role in tune.roles:
        teacher = {"teacher": Path("t")} if role == "student" else {}
        cfg = tune.config(role, lowest(tune, role), **teacher)
        try:
            load_data(cfg, torch.device("cpu"), test=False)
        except UsageError as exc:
            # the message names the options; in a tune file they are keys of [tune]
            why = exc.message.replace("--val-per-class", "val_per_class")
            why = why.replace("--val-fraction", "val_fraction")
            raise UsageError(f"{tune.source}: [tune]: {why}") from None


def rerun_command(
    path: Path, given: Mapping[str, Any], study_name: str | None, storage_url: str | None
) -> str:
    """The command that runs this worker again, as a shell line: the file, the options given,
    the storage shown without its password (one from $ICCKD_TUNE_STORAGE is not repeated)."""
    argv = ["icckd", "tune", str(path)]
    for key, value in given.items():
        argv += [
            f"--{key.replace('_', '-')}",
            f"{value:g}" if isinstance(value, float) else str(value),
        ]
    if storage_url:
        argv += ["--storage", Storage(storage_url, Path(".")).shown]
    if study_name:
        argv += ["--study-name", study_name]
    return shlex.join(argv)


def steps(tune: TuneFile) -> int:
    """The pruner's axis: the teacher's epochs, then (target student) the student's."""
    epochs = tune.config("teacher", lowest(tune, "teacher")).epochs
    if tune.options.target == "student":
        epochs += tune.config("student", lowest(tune, "student"), teacher=Path("t")).epochs
    return int(epochs)


def lowest(tune: TuneFile, role: str) -> dict[str, Any]:
    """Each searched setting of `role` at its first edge (epochs may be searched too)."""
    return {k: p.extremes()[0] for k, p in tune.space[role].items()}


def finish(study: Any, tune: TuneFile, storage: Storage, plot: Path | None) -> Tuned:
    """The summary, the best trial's files and the figures."""
    from icckd_cli.presentation.tune import write_figures

    result = summary(study, tune, storage)
    files: list[Path] = []
    if result["best"] is not None:
        files += write_best_files(tune, result["best"], study.study_name)
    log = {param_name(role, key): p.log for role, ps in tune.space.items() for key, p in ps.items()}
    if any(t["value"] is not None for t in result["trials"]):
        files += write_figures(result, plot or Path(tune.options.out), log)
    return Tuned(result, reasons(study), files)


def overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """The command-line options that replace [tune]'s values."""
    return {k: v for k, v in values.items() if v is not None}
