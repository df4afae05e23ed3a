"""Running the matrix: every run not finished yet (here, or in workers or Slurm jobs), then
the measurements and the results.

A folder holding model.safetensors is finished and skipped; one holding state.safetensors
is resumed; so running the same command again after Ctrl-C only does what is left.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.base.events import Callback
from icckd_cli.commands.executor.checks import check_executor
from icckd_cli.commands.experiment.costs import cost_figure, measure_costs
from icckd_cli.commands.experiment.diversity import measure_diversity
from icckd_cli.commands.experiment.finished import FinishedRuns
from icckd_cli.commands.experiment.matched.plan import check_matchable, resolve_teacher
from icckd_cli.commands.experiment.plan import Experiment, Run
from icckd_cli.commands.experiment.result_types import ExperimentResults
from icckd_cli.commands.experiment.results import collect, write_results
from icckd_cli.commands.experiment.stages import run_stages
from icckd_cli.commands.experiment.teacher_gap import with_teacher_gaps
from icckd_cli.commands.experiment.transfer.measures import with_transfer
from icckd_cli.commands.robustness.students import measure_corruptions
from icckd_cli.data.loading import check_folder

# Execution details that may change between invocations without invalidating a finished run.
IGNORED_ON_REUSE = set(
    "device overwrite download save_every eval_batch_size out teacher data_dir precision "
    "compile channels_last tensorboard teacher_cache teacher_cache_embeddings".split()
)
# Panels of the learning-curve figures: the unweighted training CE compares every kind of
# run (their weighted sums do not); the gate's pass rate only where a run logs it.
CURVE_METRICS = ("train_ce", "top1", "nll", "train_icc_gate_pass")


def check_reusable(run: Run, finished: FinishedRuns | None = None) -> None:
    """A finished or partial run must have been made with the settings asked for now."""
    from icckd_cli.commands.inputs import resolved_config
    from icckd_cli.training.rundir import CONFIG_FILE

    saved_file = run.out / CONFIG_FILE
    if run.status() == "new" or not saved_file.is_file():
        return
    saved = json.loads(saved_file.read_text())
    wanted = json.loads(json.dumps(resolved_config(run.config)))
    wanted["model_args"] = _filled_model_args(run, wanted, saved, finished or FinishedRuns())
    for key, value in wanted.items():
        if key not in IGNORED_ON_REUSE and saved.get(key, value) != value:
            raise UsageError(
                f"{run.out} was run with {key} = {saved.get(key)!r} but the experiment now asks "
                f"for {value!r}; delete that folder to redo it, or choose another out"
            )


def _filled_model_args(
    run: Run, wanted: dict[str, Any], saved: dict[str, Any], finished: FinishedRuns
) -> Any:
    """The builder arguments asked for, with the defaults a run fills in filled in too.

    A run records its model's arguments with the data set's image size added where the
    builder takes one (timm's img_size); the data set's size is read from the finished
    checkpoint, or (an interrupted run records no data set) taken as the recorded value,
    which resuming checks anyway: the saved weights load only into the same shapes.
    """
    from icckd_cli.models import model_args_for

    given = dict(wanted.get("model_args") or {})
    recorded = saved.get("model_args")
    if not isinstance(recorded, dict) or not recorded.keys() - given.keys():
        return given  # nothing was filled in
    # the argument the builder fills in (img_size, image_size), if any
    size_key = next(iter(model_args_for(wanted["arch"], given, 1).keys() - given.keys()), None)
    if size_key is None:
        return given
    result = finished.of(run)  # None while the run is not finished
    size = None if result is None else result.dataset.get("image_size")
    size = recorded.get(size_key) if size is None else size
    return json.loads(json.dumps(model_args_for(wanted["arch"], given, size)))


def check_student_teacher(run: Run, finished: FinishedRuns) -> None:
    """A finished student must come from the teacher now in its teacher's folder."""
    result = finished.of(run)
    distill = run.distill
    if result is None or distill is None or distill.teacher is None:
        return
    teacher = Path(distill.teacher)
    recorded = result.teacher_sha256
    if recorded and recorded != finished.teacher_hash(teacher):
        raise UsageError(
            f"{run.out} was distilled from other weights than {teacher} (the teacher was "
            "retrained); delete the student folder to redo it"
        )


def check_data(exp: Experiment) -> None:
    """Refuse a missing data folder before any run (or a dry run's list), as a run would."""
    for run in exp.runs:
        cfg = run.config
        check_folder(cfg.dataset, cfg.data_dir, f"data_dir in {exp.source}")


def plan_states(exp: Experiment) -> list[tuple[str, str]]:
    """(label, done/partial/new) of every run, after the checks a real run makes first.

    `--dry-run` shows this: a run listed as done is one the experiment would skip, and a
    folder made with other settings is refused here as it would be there.
    """
    check_data(exp)
    finished = FinishedRuns()
    for run in exp.runs:
        check_reusable(run, finished)
    check_matchable(exp)  # teachers made without snapshots, refused as a run would
    matches: dict[int, dict[str, Any]] = {}
    for run in exp.runs:
        resolve_teacher(exp, run, matches, required=False)  # where its teachers are done
        teacher = None if run.distill is None else run.distill.teacher
        if teacher is not None and run.status() == "done" and Path(teacher).is_file():
            check_student_teacher(run, finished)
    return [(r.label, r.status()) for r in exp.runs]


class RunsFailed(IcckdError):
    """Runs of the matrix failed in their workers or jobs; the others' results were written."""

    def __init__(self, message: str, results: ExperimentResults) -> None:
        super().__init__(message)
        self.results = results


def run_experiment(
    exp: Experiment, callback: Callback, wait: bool = True
) -> ExperimentResults | None:
    """Do every run not finished yet, then measure the teachers and write the results.

    None in a process other than the first under torchrun (only that one writes them), and
    after `wait=False`: exp.executor local or slurm sends the runs to worker processes or
    Slurm jobs (stages.py), and without waiting they are submitted and nothing more is done.
    """
    check_executor(exp.executor)
    if not wait and exp.executor.kind != "slurm":
        raise UsageError(
            "--no-wait needs --executor slurm (local workers and in-process runs end with the "
            "command)"
        )
    check_data(exp)
    finished = FinishedRuns()  # each finished run's header read once, each teacher hashed once
    for run in exp.runs:
        check_reusable(run, finished)
    check_matchable(exp)  # teachers made without snapshots, refused before any work
    if exp.executor.kind == "inprocess":
        _run_inprocess(exp, callback, finished)
        return finish_experiment(exp, callback, finished)
    outcome = run_stages(exp, exp.executor, callback, wait)
    if outcome.waiting:
        return None
    matches: dict[int, dict[str, Any]] = {}
    for run in (r for r in exp.runs if r.kind == "student" and r.status() == "done"):
        resolve_teacher(exp, run, matches)  # a matched student's snapshot, for the check
        check_student_teacher(run, finished)
        drop_finished_cache(exp, run)
    results = finish_experiment(exp, callback, finished)
    if outcome.failed and results is not None:
        failed = "; ".join(f"{label} (log: {log})" for label, log in outcome.failed.items())
        raise RunsFailed(
            f"{len(outcome.failed)} run(s) failed: {failed}; their cells are missing from the "
            "results; run the same command again to retry them",
            results,
        )
    return results


def _run_inprocess(exp: Experiment, callback: Callback, finished: FinishedRuns) -> None:
    """Every unfinished run of the matrix, one after another in this process."""
    from icckd_cli.commands import runs as runner

    matches: dict[int, dict[str, Any]] = {}
    total = len(exp.runs)
    callback("plan", {"total": total, "done": sum(r.status() == "done" for r in exp.runs)})
    for i, run in enumerate(exp.runs, 1):
        resolve_teacher(exp, run, matches)  # a matched student's teacher snapshot
        status = run.status()
        info = {"index": i, "total": total, "label": run.label, "kind": run.kind}
        if status == "done":
            if run.kind == "student":
                check_student_teacher(run, finished)
            callback("run", {**info, "action": "skip"})
            continue
        callback("run", {**info, "action": "resume" if status == "partial" else "train"})
        train = runner.distill if run.kind == "student" else runner.train_teacher
        try:
            result = train(run.config, callback, resume=status == "partial")  # type: ignore[arg-type]
        except IcckdError as exc:
            raise type(exc)(f"run {run.label}: {exc.message}") from None
        callback(
            "run_end",
            {**info, "final": result.final, "best": result.best, "elapsed": result.elapsed},
        )
        if run.kind == "student":
            drop_finished_cache(exp, run)


def finish_experiment(
    exp: Experiment, callback: Callback, finished: FinishedRuns
) -> ExperimentResults | None:
    """Measure the finished runs and write results.json, the tables and the figures."""
    from icckd_cli.training import distributed as dist

    if not dist.is_main():  # under torchrun process 0 alone measures and writes the results
        return None
    diversity = measure_diversity(exp, callback)
    o = exp.options
    if o.corruptions:  # each finished student once, kept on disk
        measure_corruptions(exp.runs, o.corruptions_dir, o.download, o.device)
    results = collect(exp, diversity, measure_costs(exp, callback, finished), finished)
    results = with_transfer(exp, results, finished)  # negative transfer, robustness, long tail
    results = with_teacher_gaps(exp, results)  # matched teachers; teacher gap and line
    figure = cost_figure(exp, results.cost)
    results = replace(results, figures=write_curves(exp), cost=replace(results.cost, figure=figure))
    write_results(exp, results)
    callback("finish", {"out": str(exp.options.out)})
    return results


def drop_finished_cache(exp: Experiment, run: Run) -> None:
    """Delete this process's shard of a teacher-output store once all its students are done."""
    import shutil

    from icckd_cli.training import distributed as dist
    from icckd_cli.training.store import shard_folder

    cache = run.teacher_cache
    if cache is None:
        return
    readers = [r for r in exp.runs if r.teacher_cache == cache]
    if all(r.status() == "done" for r in readers):
        shutil.rmtree(shard_folder(cache, dist.rank(), dist.world_size()), ignore_errors=True)
        for folder in (Path(cache), Path(cache).parent, Path(cache).parent.parent):
            with contextlib.suppress(OSError):  # each only once empty (other ranks' shards)
                folder.rmdir()


def write_curves(exp: Experiment) -> list[dict[str, str]]:
    """A learning-curve figure per group next to results.md: teachers, students per method."""
    from icckd_cli.presentation.run_plots import Curve, write_learning_curves
    from icckd_cli.training.rundir import METRICS_FILE, decay_epochs, read_metrics

    baseline = [r for r in exp.runs if r.kind == "baseline"]
    groups = [("teachers", "curves_teachers.png", [r for r in exp.runs if r.kind == "teacher"])]
    for s in exp.students:  # the student alone beside each method: does distilling pay?
        runs = [r for r in exp.runs if r.kind == "student" and r.student == s.name]
        groups.append((f"students: {s.name}", f"curves_students_{s.name}.png", runs + baseline))
    figures = []
    for title, file, runs in groups:
        curves = [
            Curve(_curve_label(r), read_metrics(r.out), decay_epochs(r.out), r.teacher or r.kind)
            for r in runs
            if (r.out / METRICS_FILE).is_file()
        ]
        logged = {k for c in curves for rec in c.history for k in rec}
        metrics = [m for m in CURVE_METRICS if m in logged]
        if not curves or not metrics:
            continue
        full = f"{title} ({exp.options.name}, {exp.options.dataset})"
        write_learning_curves(curves, metrics, Path(exp.options.out) / file, full)
        figures.append({"title": title, "file": file})
    return figures


def _curve_label(run: Run) -> str:
    if run.kind == "teacher":
        return f"{run.teacher} seed {run.seed}"
    if run.kind == "student":
        return f"from {run.teacher}, seed {run.seed}"
    return f"alone (CE), seed {run.seed}"
