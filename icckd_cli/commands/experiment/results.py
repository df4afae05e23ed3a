"""Finished runs into one set of numbers, written as JSON and (markdown.py) as Markdown.

The results (the answers first: what KD from each teacher adds over the student alone and
each teacher variant minus the cross-entropy teacher, as paired differences with a 95%
t-interval and a sign count, and one sentence saying so; then mean and sample std over
seeds and the teachers' soft-label diversity) go to OUT/results.json and results.md.
`collect` builds them as an ExperimentResults (result_types.py) from each finished run's
header, read once (finished.py); transfer.py and teacher_gap.py return it with more added.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from icckd_cli.commands.experiment.answers import answers_sentence
from icckd_cli.commands.experiment.costs import cost_rows
from icckd_cli.commands.experiment.finished import FinishedRuns
from icckd_cli.commands.experiment.markdown import (
    DIVERSITY_KEYS,
    results_markdown,
)
from icckd_cli.commands.experiment.plan import Experiment, Run
from icckd_cli.commands.experiment.result_types import (
    Answer,
    Baseline,
    Difference,
    ExperimentResults,
    LastBest,
    Setup,
    Stats,
    StudentCell,
    TeacherDifference,
    TeacherSummary,
)
from icckd_cli.settings.config import DistillConfig, TrainTeacherConfig


def aggregate(values: Mapping[int, float | None], seeds: int) -> Stats:
    """Mean and sample std (n - 1) over the seeds present; n counts them, of `seeds`."""
    present = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
    xs = list(present.values())
    return Stats(
        mean=statistics.fmean(xs) if xs else None,
        std=statistics.stdev(xs) if len(xs) > 1 else None,
        n=len(xs),
        seeds=seeds,
        values={str(k): v for k, v in sorted(present.items())},
    )


def t_interval(xs: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean: mean +- t_{n-1} * s / sqrt(n); None under 2 values."""
    from scipy.stats import t as student_t

    if len(xs) < 2:
        return None
    mean, sem = statistics.fmean(xs), statistics.stdev(xs) / math.sqrt(len(xs))
    half = float(student_t.ppf(0.5 + confidence / 2, len(xs) - 1)) * sem
    return mean - half, mean + half


def difference_stats(values: Mapping[int, float | None], seeds: int) -> Difference:
    """aggregate() of paired differences plus the 95% t-interval and the positive seeds."""
    agg = aggregate(values, seeds)
    xs = list(agg.values.values())
    ci = t_interval(xs)
    return Difference(**vars(agg), ci95=ci, positive=sum(x > 0 for x in xs))


def paired_difference(
    a: Mapping[int, float | None], b: Mapping[int, float | None]
) -> dict[int, float]:
    """a - b for every seed where both are present (students share their seed's data order)."""
    return {k: a[k] - b[k] for k in a if k in b and a[k] is not None and b[k] is not None}  # type: ignore[operator]


def _objective(cfg: TrainTeacherConfig) -> str:
    ce = f"CE (label smoothing {cfg.label_smoothing:g})" if cfg.label_smoothing else "CE"
    if cfg.icc_weight == 0:
        return "cross-entropy" if ce == "CE" else ce
    gate = "no gate" if cfg.margin <= -1 else f"margin {cfg.margin:g}"
    cache = f"K {cfg.queue_size}" if cfg.queue_size else "no cache"
    return f"{ce} + {cfg.icc_weight:g} L_intra ({gate}, tau {cfg.icc_temperature:g}, {cache})"


def labels_phrase(cfg: DistillConfig) -> str | None:
    """Which training images a student learns from with and without labels; None: all labelled."""
    if not cfg.hides_labels():
        return None
    known = "all" if cfg.labels_per_class is None else f"{cfg.labels_per_class} per class"
    if cfg.unlabeled_ratio == 0:
        return f"{known} labelled, the rest unused"
    extra = " and an extra folder" if cfg.unlabeled_dir is not None else ""
    return f"{known} labelled, the rest{extra} unlabelled"


def _top1(runs: Mapping[int, Run], finished: FinishedRuns) -> dict[str, dict[int, float | None]]:
    """top-1 at the last ('final') and at the best epoch, by seed; None where not done."""
    return {w: {k: finished.top1(r, w) for k, r in runs.items()} for w in ("final", "best")}


def _last_best(top1: Mapping[str, Mapping[int, float | None]], n: int) -> LastBest:
    return LastBest(aggregate(top1["final"], n), aggregate(top1["best"], n))


def _last_best_diff(diff: Mapping[str, Mapping[int, float | None]], n: int) -> dict[str, Any]:
    return {"last": difference_stats(diff["final"], n), "best": difference_stats(diff["best"], n)}


def collect(
    exp: Experiment,
    diversity: Mapping[str, Mapping[int, dict]],
    costs: Mapping[str, Any] | None = None,
    finished: FinishedRuns | None = None,
) -> ExperimentResults:
    """Every cell the tables show, from each finished run's header (costs: measure_costs)."""
    finished = FinishedRuns() if finished is None else finished
    o, n = exp.options, len(exp.options.seeds)
    nt = len(o.resolved_teacher_seeds())  # teachers are aggregated over their own seeds
    reference = next((t for t in exp.teachers if t.cross_entropy), None)
    teachers, teacher_differences = [], []
    for t in exp.teachers:
        div = diversity.get(t.name, {})
        teachers.append(
            TeacherSummary(t.name, t.config.arch, _objective(t.config), t.config.icc_weight,
                           t.cross_entropy,
                           aggregate(_top1(exp.teacher_runs(t.name), finished)["final"], nt),
                           {key: aggregate({k: d.get(key) for k, d in div.items()}, nt)
                            for key in DIVERSITY_KEYS})
        )  # fmt: skip
        if reference is not None and t is not reference:
            ours = _top1(exp.teacher_runs(t.name), finished)
            ref = _top1(exp.teacher_runs(reference.name), finished)
            gap = paired_difference(ours["final"], ref["final"])
            teacher_differences.append(
                TeacherDifference(t.name, reference.name, difference_stats(gap, nt))
            )
    base_top1 = None
    if exp.baseline is not None:
        base_top1 = _top1({r.seed: r for r in exp.runs if r.kind == "baseline"}, finished)
    students, differences, answers = [], [], []
    for s in exp.students:
        top1 = {}
        for t in exp.teachers:
            runs = {r.seed: r for r in exp.runs if (r.teacher, r.student) == (t.name, s.name)}
            top1[t.name] = _top1(runs, finished)
            about = dict(student=s.name, method=s.config.method, arch=s.config.arch)
            about["labels"] = labels_phrase(s.config)
            students.append(StudentCell(**about, teacher=t.name, top1=_last_best(top1[t.name], n)))
            if base_top1 is not None:  # what distilling from t adds over the student alone
                gain = {w: paired_difference(top1[t.name][w], base_top1[w]) for w in base_top1}
                pair = dict(student=s.name, method=s.config.method, teacher=t.name)
                answers.append(Answer(**pair, reference=None, **_last_best_diff(gain, n)))
        for t in exp.teachers:
            if reference is None or t is reference:
                continue
            ours, ref = top1[t.name], top1[reference.name]
            diff = {w: paired_difference(ours[w], ref[w]) for w in ours}
            pair = dict(student=s.name, method=s.config.method, teacher=t.name)
            differences.append(Answer(**pair, reference=reference.name, **_last_best_diff(diff, n)))
    answers += differences
    baseline = None
    if exp.baseline is not None and base_top1 is not None:
        baseline = Baseline(exp.baseline.arch, _last_best(base_top1, n))
    student_cfg = exp.students[0].config if exp.students else exp.baseline
    setup = Setup(o.name, o.dataset, o.train_per_class, exp.teachers[0].config.train_per_class,
                  student_cfg.train_per_class if student_cfg else None, o.test_per_class,
                  o.val_per_class, o.val_fraction, list(o.seeds), str(o.out),
                  o.resolved_teacher_seeds(), o.temperature)  # fmt: skip
    return ExperimentResults(
        setup, exp.command, answers, answers_sentence([a.to_json() for a in answers]),
        teachers, teacher_differences, students, differences, baseline,
        cost_rows(teachers, students, baseline, costs),
    )  # fmt: skip


def write_results(exp: Experiment, results: ExperimentResults) -> None:
    """OUT/results.json and OUT/results.md."""
    from icckd_cli.base.atomic import write_text_atomic

    root, doc = Path(exp.options.out), results.to_json()
    write_text_atomic(root / "results.json", json.dumps(doc, indent=2) + "\n")
    write_text_atomic(root / "results.md", results_markdown(doc))
