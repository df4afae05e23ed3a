"""Negative transfer, robustness and long-tail numbers of an experiment, from files on disk.

Nothing here runs a model: each run's predictions.npy (its final model's test predictions)
and checkpoint metadata, the corruptions.json that robustness.py wrote, and the test split's
labels. Per student method and teacher, in results.json's `students` entries:

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

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from icckd_cli.base.errors import IcckdError
from icckd_cli.metrics.perclass import per_class_report
from icckd_cli.metrics.transfer import (
    PREDICTIONS_FILE,
    agreement,
    kd_worse_seeds,
    mean_negative_flip_rate,
    read_predictions,
)
from icckd_cli.work.experiment.config import Experiment, Run
from icckd_cli.work.experiment.results import difference_stats, paired_difference, run_top1
from icckd_cli.work.experiment.transfer_tables import TRANSFER_KEYS

CORRUPTIONS_FILE = "corruptions.json"


def test_labels(exp: Experiment) -> np.ndarray | None:
    """The test split's labels as the runs saw them; None when the data cannot be read.

    Loaded with a student's (else a teacher's) data settings, so a decoded folder is read
    back from the decode cache, not decoded again.
    """
    from icckd_cli.data import Holdout, LoadOptions, load_dataset

    cfg = exp.students[0].config if exp.students else exp.teachers[0].config
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
    exp: Experiment, teacher: str, student: str, labels: np.ndarray | None
) -> dict[str, Any]:
    """{kd_worse_seeds, negative_flip_rate, agreement} of one student method from one teacher."""
    n = None if labels is None else len(labels)
    runs = {r.seed: r for r in exp.runs if (r.teacher, r.student) == (teacher, student)}
    base = {r.seed: r for r in exp.runs if r.kind == "baseline"}
    teachers = exp.teacher_runs(teacher)
    out: dict[str, Any] = dict.fromkeys(TRANSFER_KEYS)
    if base:
        alone = {s: run_top1(r) for s, r in base.items()}
        kd = {s: run_top1(r) for s, r in runs.items()}
        a = {s: v for s, v in alone.items() if v is not None}
        k = {s: v for s, v in kd.items() if v is not None}
        if a.keys() & k.keys():
            out["kd_worse_seeds"] = kd_worse_seeds(a, k)  # over the seeds both have
        p_alone = {s: p for s, r in base.items() if (p := _predictions(r, n)) is not None}
        p_kd = {s: p for s, r in runs.items() if (p := _predictions(r, n)) is not None}
        if labels is not None:
            out["negative_flip_rate"] = mean_negative_flip_rate(p_alone, p_kd, labels)
    rates = []
    for run in runs.values():
        t_run = teachers.get(run.teacher_seed) if run.teacher_seed is not None else None
        ps = _predictions(run, n)
        pt = _predictions(t_run, n) if t_run is not None else None
        if ps is not None and pt is not None and len(ps) == len(pt):
            rates.append(agreement(ps, pt))
    out["agreement"] = _mean(rates)
    return out


def student_class_metrics(run: Run, labels: np.ndarray | None) -> dict[str, Any]:
    """balanced_top1 and few-shot top-1 of a finished student, from its predictions."""
    from icckd_cli.base.checkpoint import read_metadata
    from icckd_cli.training.rundir import MODEL_FILE

    pred = None if labels is None else _predictions(run, len(labels))
    if pred is None or labels is None:
        return {}
    dataset = read_metadata(run.out / MODEL_FILE).get("dataset") or {}
    counts = dataset.get("train_counts")
    classes = int(dataset.get("num_classes") or (max(labels.max(), pred.max()) + 1))
    report = per_class_report(pred, labels, classes, counts)
    return {
        "balanced_top1": report["balanced_top1"],
        "few": (report.get("groups") or {}).get("few"),
    }


def corruption_mean(run: Run) -> float | None:
    """The mean corruption top-1 robustness.py recorded for a run; None if none."""
    try:
        return json.loads((run.out / CORRUPTIONS_FILE).read_text())["mean_top1"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def extra_answers(exp: Experiment, labels: np.ndarray | None) -> list[dict[str, Any]]:
    """Answers on corruption top-1 / balanced top-1 / few-shot: each teacher minus the CE one."""
    o = exp.options
    reference = next((t for t in exp.teachers if t.cross_entropy), None)
    if reference is None:
        return []
    measures: list[tuple[str, Any]] = []
    if o.corruptions:
        measures.append(("mean corruption top-1", corruption_mean))
    if o.imbalance_factor != 1:
        measures.append(("balanced top-1", lambda r: student_class_metrics(r, labels).get(
            "balanced_top1")))  # fmt: skip
        measures.append(("few-shot top-1", lambda r: student_class_metrics(r, labels).get("few")))
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
                pair = dict(student=s.name, method=s.config.method, teacher=t.name)
                answers.append({**pair, "reference": reference.name, "metric": metric,
                                "last": difference_stats(diff, n)})  # fmt: skip
    return answers


def add_transfer(exp: Experiment, results: dict[str, Any]) -> None:
    """Put the transfer keys into results['students'] and the extra answers into 'answers'."""
    labels = test_labels(exp)
    for entry in results.get("students", []):
        entry.update(transfer_entry(exp, entry["teacher"], entry["student"], labels))
    results["imbalance_factor"] = exp.options.imbalance_factor
    extra = extra_answers(exp, labels)
    if extra:
        from icckd_cli.work.experiment.answers import answers_sentence

        results["answers"] = [*results.get("answers", []), *extra]
        results["answers_summary"] = answers_sentence(results["answers"])


def save_corruptions(path: Path, summary: Mapping[str, Any], stamp: int) -> None:
    """A run's corruption summary, keyed to its model file's time."""
    from icckd_cli.base.atomic import write_text_atomic

    write_text_atomic(path, json.dumps({**summary, "model_mtime_ns": stamp}, indent=2) + "\n")
