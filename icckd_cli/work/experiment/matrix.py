"""Running the matrix: every run not finished yet, then the teachers' soft-label diversity.

A folder holding model.safetensors is finished and skipped; one holding state.safetensors
is resumed; so running the same command again after Ctrl-C only does what is left.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.base.events import Callback
from icckd_cli.settings.config import DistillConfig
from icckd_cli.work.executor.checks import check_executor
from icckd_cli.work.experiment.costs import cost_figure, measure_costs
from icckd_cli.work.experiment.matching_plan import check_matchable, resolve_teacher
from icckd_cli.work.experiment.plan import Experiment, Run
from icckd_cli.work.experiment.results import collect, write_results
from icckd_cli.work.experiment.robustness import measure_corruptions
from icckd_cli.work.experiment.stages import run_stages
from icckd_cli.work.experiment.teacher_gap import add_teacher_gaps
from icckd_cli.work.experiment.transfer import add_transfer

# Execution details that may change between invocations without invalidating a finished run.
IGNORED_ON_REUSE = set(
    "device overwrite download save_every eval_batch_size out teacher data_dir precision "
    "compile channels_last tensorboard teacher_cache teacher_cache_embeddings".split()
)
DIVERSITY_FILE = "diversity.json"
# Panels of the learning-curve figures: the unweighted training CE compares every kind of
# run (their weighted sums do not); the gate's pass rate only where a run logs it.
CURVE_METRICS = ("train_ce", "top1", "nll", "train_icc_gate_pass")


def check_reusable(run: Run) -> None:
    """A finished or partial run must have been made with the settings asked for now."""
    from icckd_cli.training.rundir import CONFIG_FILE
    from icckd_cli.work.runs import resolved_config

    saved_file = run.out / CONFIG_FILE
    if run.status() == "new" or not saved_file.is_file():
        return
    saved = json.loads(saved_file.read_text())
    wanted = json.loads(json.dumps(resolved_config(run.config)))
    wanted["model_args"] = _filled_model_args(run, wanted, saved)
    for key, value in wanted.items():
        if key not in IGNORED_ON_REUSE and saved.get(key, value) != value:
            raise UsageError(
                f"{run.out} was run with {key} = {saved.get(key)!r} but the experiment now asks "
                f"for {value!r}; delete that folder to redo it, or choose another out"
            )


def _filled_model_args(run: Run, wanted: dict[str, Any], saved: dict[str, Any]) -> Any:
    """The builder arguments asked for, with the defaults a run fills in filled in too.

    A run records its model's arguments with the data set's image size added where the
    builder takes one (timm's img_size); the data set's size is read from the finished
    checkpoint, or (an interrupted run records no data set) taken as the recorded value,
    which resuming checks anyway: the saved weights load only into the same shapes.
    """
    from icckd_cli.base.checkpoint import read_metadata
    from icckd_cli.models import model_args_for
    from icckd_cli.training.rundir import MODEL_FILE

    given = dict(wanted.get("model_args") or {})
    recorded = saved.get("model_args")
    if not isinstance(recorded, dict) or not recorded.keys() - given.keys():
        return given  # nothing was filled in
    # the argument the builder fills in (img_size, image_size), if any
    size_key = next(iter(model_args_for(wanted["arch"], given, 1).keys() - given.keys()), None)
    if size_key is None:
        return given
    size = None
    if run.status() == "done":
        size = (read_metadata(run.out / MODEL_FILE).get("dataset") or {}).get("image_size")
    size = recorded.get(size_key) if size is None else size
    return json.loads(json.dumps(model_args_for(wanted["arch"], given, size)))


def check_student_teacher(run: Run, cache: dict[Path, str]) -> None:
    """A finished student must come from the teacher now in its teacher's folder."""
    from icckd_cli.base.checkpoint import load_tensors, read_metadata, weights_hash
    from icckd_cli.training.rundir import MODEL_FILE

    recorded = (read_metadata(run.out / MODEL_FILE).get("teacher") or {}).get("sha256")
    assert isinstance(run.config, DistillConfig) and run.config.teacher is not None
    teacher = Path(run.config.teacher)
    if teacher not in cache:
        cache[teacher] = weights_hash(load_tensors(teacher))
    if recorded and recorded != cache[teacher]:
        raise UsageError(
            f"{run.out} was distilled from other weights than {teacher} (the teacher was "
            "retrained); delete the student folder to redo it"
        )


def plan_states(exp: Experiment) -> list[tuple[str, str]]:
    """(label, done/partial/new) of every run, after the checks a real run makes first.

    `--dry-run` shows this: a run listed as done is one the experiment would skip, and a
    folder made with other settings is refused here as it would be there.
    """
    for run in exp.runs:
        check_reusable(run)
    check_matchable(exp)  # issue 29: teachers made without snapshots, refused as a run would
    matches: dict[int, dict[str, Any]] = {}
    hashes: dict[Path, str] = {}
    for run in exp.runs:
        resolve_teacher(exp, run, matches, required=False)  # issue 29: where its teachers are done
        teacher = getattr(run.config, "teacher", None)
        if teacher is not None and run.status() == "done" and Path(teacher).is_file():
            check_student_teacher(run, hashes)
    return [(r.label, r.status()) for r in exp.runs]


class RunsFailed(IcckdError):
    """Runs of the matrix failed in their workers or jobs; the others' results were written."""

    def __init__(self, message: str, results: dict[str, Any]) -> None:
        super().__init__(message)
        self.results = results


def run_experiment(exp: Experiment, callback: Callback, wait: bool = True) -> dict[str, Any]:
    """Do every run not finished yet, then measure the teachers and write the results.

    exp.executor local or slurm: the runs go to worker processes or Slurm jobs (stages.py);
    without `wait` they are submitted and nothing more is done (an empty dict).
    """
    executor = exp.executor
    check_executor(executor)
    if not wait and executor.kind != "slurm":
        raise UsageError(
            "--no-wait needs --executor slurm (local workers and in-process runs end with the "
            "command)"
        )
    for run in exp.runs:
        check_reusable(run)
    check_matchable(exp)  # issue 29: teachers made without snapshots, refused before any work
    if executor.kind == "inprocess":
        _run_inprocess(exp, callback)
        return finish_experiment(exp, callback)
    outcome = run_stages(exp, executor, callback, wait)
    if outcome.waiting:
        return {}
    hashes: dict[Path, str] = {}
    for run in exp.runs:
        if run.kind == "student" and run.status() == "done":
            resolve_teacher(exp, run, {})
            check_student_teacher(run, hashes)
            drop_finished_cache(exp, run)
    results = finish_experiment(exp, callback)
    if outcome.failed:
        failed = "; ".join(f"{label} (log: {log})" for label, log in outcome.failed.items())
        raise RunsFailed(
            f"{len(outcome.failed)} run(s) failed: {failed}; their cells are missing from the "
            "results; run the same command again to retry them",
            results,
        )
    return results


def _run_inprocess(exp: Experiment, callback: Callback) -> None:
    """Every unfinished run of the matrix, one after another in this process."""
    from icckd_cli.work import runs as runner

    matches: dict[int, dict[str, Any]] = {}
    total = len(exp.runs)
    callback("plan", {"total": total, "done": sum(r.status() == "done" for r in exp.runs)})
    hashes: dict[Path, str] = {}
    for i, run in enumerate(exp.runs, 1):
        resolve_teacher(exp, run, matches)  # issue 29: a matched student's teacher snapshot
        status = run.status()
        info = {"index": i, "total": total, "label": run.label, "kind": run.kind}
        if status == "done":
            if run.kind == "student":
                check_student_teacher(run, hashes)
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


def finish_experiment(exp: Experiment, callback: Callback) -> dict[str, Any]:
    """Measure the finished teachers and students, write results.json, tables and figures."""
    from icckd_cli.training import distributed as dist

    if not dist.is_main():  # under torchrun process 0 alone measures and writes the results
        return {}
    diversity = measure_diversity(exp, callback)
    measure_corruptions(exp, callback)  # corruptions = true: each student once, kept on disk
    results = collect(exp, diversity, measure_costs(exp, callback))
    add_transfer(exp, results)  # negative transfer, robustness and long-tail answers
    add_teacher_gaps(exp, results)  # issue 29: matched teachers; teacher gap and line
    results["figures"] = write_curves(exp)
    results["cost"]["figure"] = cost_figure(exp, results)
    write_results(exp, results)
    callback("finish", {"out": str(exp.options.out)})
    return results


def drop_finished_cache(exp: Experiment, run: Run) -> None:
    """Delete this process's shard of a teacher-output store once all its students are done."""
    import shutil

    from icckd_cli.training import distributed as dist
    from icckd_cli.training.store import shard_folder

    cache = getattr(run.config, "teacher_cache", None)
    if cache is None:
        return
    readers = [r for r in exp.runs if getattr(r.config, "teacher_cache", None) == cache]
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


def measure_diversity(exp: Experiment, callback: Callback) -> dict[str, dict[int, dict]]:
    """Soft-label statistics of every finished teacher on the test split, cached per run."""
    from icckd_cli.settings.config import InspectConfig
    from icckd_cli.training.rundir import MODEL_FILE
    from icckd_cli.work.inspect import inspect_checkpoints

    temperature = exp.options.temperature
    found: dict[str, dict[int, dict]] = {t.name: {} for t in exp.teachers}
    todo: list[Run] = []
    for run in (r for r in exp.runs if r.kind == "teacher" and r.status() == "done"):
        stamp = (run.out / MODEL_FILE).stat().st_mtime_ns
        cached = _read_json(run.out / DIVERSITY_FILE)
        if cached.get("temperature") == temperature and cached.get("model_mtime_ns") == stamp:
            found[run.teacher][run.seed] = cached["overall"]  # type: ignore[index]
        else:
            todo.append(run)
    if todo:
        callback("diversity", {"count": len(todo)})
        cfg = InspectConfig.model_validate(
            {
                "checkpoints": [r.out / MODEL_FILE for r in todo],
                "temperature": temperature,
                "device": exp.options.device,
                "download": exp.options.download,
            }
        )
        for run, res in zip(todo, inspect_checkpoints(cfg), strict=True):
            overall = {k: _finite(v) for k, v in res.stats.overall.items()}
            stamp = (run.out / MODEL_FILE).stat().st_mtime_ns
            record = {
                "temperature": temperature,
                "split": "test",
                "model_mtime_ns": stamp,
                "overall": overall,
            }
            _write_json(run.out / DIVERSITY_FILE, record)
            found[run.teacher][run.seed] = overall  # type: ignore[index]
    return found


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, obj: Any) -> None:
    from icckd_cli.base.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
