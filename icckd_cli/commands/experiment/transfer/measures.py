"""Negative transfer, robustness and long-tail numbers of an experiment, from files on disk.

Nothing here runs a model: each run's predictions.npy (its final model's test predictions)
and checkpoint metadata, the corruptions.json that robustness/students.py wrote, and the test
split's labels. Per student method and teacher, in results.json's `students` entries:

- kd_worse_seeds: seeds where the distilled student ends below the student alone;
- negative_flip_rate: % of test images the student alone gets right and the distilled one
  wrong, averaged over seeds (Yan et al., CVPR 2021);
- agreement: % of test images where the student predicts what its teacher predicts,
  averaged over seeds (Stanton et al., NeurIPS 2021).

A run without predictions.npy (made by an older icckd) gives null, never an error. With
`corruptions = true` the answers gain the students' mean corruption top-1, and with an
imbalance_factor their balanced top-1 and few-shot top-1: each the intra-class teacher's
students minus the cross-entropy teacher's, paired by seed like the other answers.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from icckd_cli.base.errors import IcckdError
from icckd_cli.commands.experiment.answers import answers_sentence
from icckd_cli.commands.experiment.finished import FinishedRuns
from icckd_cli.commands.experiment.plan import Experiment, Run
from icckd_cli.commands.experiment.result_types import Answer, ExperimentResults, Transfer
from icckd_cli.commands.experiment.results import difference_stats, paired_difference
from icckd_cli.commands.robustness.students import corruption_mean
from icckd_cli.metrics.perclass import per_class_report
from icckd_cli.metrics.transfer import (
    PREDICTIONS_FILE,
    agreement,
    kd_worse_seeds,
    mean_negative_flip_rate,
    read_predictions,
)
from icckd_cli.settings.config import DistillConfig, TrainTeacherConfig


def test_labels(exp: Experiment) -> np.ndarray | None:
    """The test split's labels as the runs saw them; None when the data cannot be read.

    Loaded with a student's (else a teacher's) data settings, so a decoded folder is read
    back from the decode cache, not decoded again.
    """
    from icckd_cli.data import Holdout, LoadOptions, load_dataset

    cfg: DistillConfig | TrainTeacherConfig = (
        exp.students[0].config if exp.students else exp.teachers[0].config
    )
    options = LoadOptions(image_size=cfg.image_size, workers=cfg.workers,
                          memory_limit_gb=cfg.memory_limit_gb, holdout=Holdout.of(cfg))  # fmt: skip
    try:
        data = load_dataset(
            cfg.dataset, cfg.data_dir, download=False, train_per_class=cfg.train_per_class,
            test_per_class=cfg.test_per_class, options=options,
        )  # fmt: skip
    except (IcckdError, OSError):
        return None
    return data.test.labels.cpu().numpy().astype(np.int64)


def _predictions(run: Run, n: int | None) -> np.ndarray | None:
    if run.status() != "done" or not (run.out / PREDICTIONS_FILE).is_file():
        return None
    try:
        return read_predictions(run.out / PREDICTIONS_FILE, n)
    except IcckdError:
        return None


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def transfer_entry(
    exp: Experiment,
    teacher: str,
    student: str,
    labels: np.ndarray | None,
    finished: FinishedRuns,
) -> Transfer:
    """kd_worse_seeds, negative_flip_rate and agreement of one student method from one teacher."""
    n = None if labels is None else len(labels)
    runs = {r.seed: r for r in exp.runs if (r.teacher, r.student) == (teacher, student)}
    base = {r.seed: r for r in exp.runs if r.kind == "baseline"}
    teachers = exp.teacher_runs(teacher)
    worse, flips = None, None
    if base:
        alone = {s: finished.top1(r) for s, r in base.items()}
        kd = {s: finished.top1(r) for s, r in runs.items()}
        a = {s: v for s, v in alone.items() if v is not None}
        k = {s: v for s, v in kd.items() if v is not None}
        if a.keys() & k.keys():
            worse = kd_worse_seeds(a, k)  # over the seeds both have
        p_alone = {s: p for s, r in base.items() if (p := _predictions(r, n)) is not None}
        p_kd = {s: p for s, r in runs.items() if (p := _predictions(r, n)) is not None}
        if labels is not None:
            flips = mean_negative_flip_rate(p_alone, p_kd, labels)
    rates = []
    for run in runs.values():
        t_run = teachers.get(run.teacher_seed) if run.teacher_seed is not None else None
        ps = _predictions(run, n)
        pt = _predictions(t_run, n) if t_run is not None else None
        if ps is not None and pt is not None and len(ps) == len(pt):
            rates.append(agreement(ps, pt))
    return Transfer(worse, flips, _mean(rates))


def student_class_metrics(
    run: Run, labels: np.ndarray | None, finished: FinishedRuns
) -> dict[str, Any]:
    """balanced_top1 and few-shot top-1 of a finished student, from its predictions."""
    pred = None if labels is None else _predictions(run, len(labels))
    result = finished.of(run)
    if pred is None or labels is None or result is None:
        return {}
    counts = result.dataset.get("train_counts")
    classes = int(result.dataset.get("num_classes") or (max(labels.max(), pred.max()) + 1))
    report = per_class_report(pred, labels, classes, counts)
    return {
        "balanced_top1": report["balanced_top1"],
        "few": (report.get("groups") or {}).get("few"),
    }


def extra_answers(
    exp: Experiment, labels: np.ndarray | None, finished: FinishedRuns
) -> list[Answer]:
    """Answers on corruption top-1 / balanced top-1 / few-shot: each teacher minus the CE one."""
    o = exp.options
    reference = next((t for t in exp.teachers if t.cross_entropy), None)
    if reference is None:
        return []
    measures: list[tuple[str, Callable[[Run], float | None]]] = []
    if o.corruptions:
        measures.append(("mean corruption top-1", corruption_mean))
    if o.imbalance_factor != 1:
        measures.append(("balanced top-1", lambda r: student_class_metrics(r, labels, finished)
                         .get("balanced_top1")))  # fmt: skip
        measures.append(("few-shot top-1", lambda r: student_class_metrics(r, labels, finished)
                         .get("few")))  # fmt: skip
    answers = []
    n = len(o.seeds)
    for metric, get in measures:
        for s in exp.students:
            by_teacher: dict[str, dict[int, float | None]] = {}
            for t in exp.teachers:
                runs = [r for r in exp.runs if (r.teacher, r.student) == (t.name, s.name)]
                by_teacher[t.name] = {r.seed: get(r) if r.status() == "done" else None
                                      for r in runs}  # fmt: skip
            for t in exp.teachers:
                if t is reference:
                    continue
                diff = paired_difference(by_teacher[t.name], by_teacher[reference.name])
                answers.append(Answer(s.name, s.config.method, t.name, reference.name,
                                      difference_stats(diff, n), metric=metric))  # fmt: skip
    return answers


def with_transfer(
    exp: Experiment, results: ExperimentResults, finished: FinishedRuns
) -> ExperimentResults:
    """The results with each student's transfer numbers and the answers on other measures."""
    labels = test_labels(exp)
    students = [
        replace(s, transfer=transfer_entry(exp, s.teacher, s.student, labels, finished))
        for s in results.students
    ]
    out = replace(results, students=students, imbalance_factor=exp.options.imbalance_factor)
    extra = extra_answers(exp, labels, finished)
    if not extra:
        return out
    answers = [*results.answers, *extra]
    summary = answers_sentence([a.to_json() for a in answers])
    return replace(out, answers=answers, answers_summary=summary)
