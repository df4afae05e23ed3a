"""Finished runs into one set of numbers, and those into tables, Markdown and JSON.

The results (the answers first: what KD from each teacher adds over the student alone and
each teacher variant minus the cross-entropy teacher, as paired differences with a 95%
t-interval and a sign count, and one sentence saying so; then mean and sample std over
seeds and the teachers' soft-label diversity) go to OUT/results.json and results.md.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from icckd_cli.settings.config import TrainTeacherConfig
from icckd_cli.work.experiment.answers import answers_sentence, answers_table
from icckd_cli.work.experiment.config import Experiment, Run
from icckd_cli.work.experiment.costs import cost_rows, cost_table
from icckd_cli.work.experiment.matching_tables import with_matching
from icckd_cli.work.experiment.tables import TableSpec, cell, diff_cell

DIVERSITY_KEYS = ("ratio", "feature_ratio", "target_prob")
DIFF_NOTE = (
    "'minus' cells: mean difference [95% t-interval over seeds] and how many seeds are "
    "above 0; an interval that holds 0 resolves no effect"
)


def aggregate(values: Mapping[int, float | None], seeds: int) -> dict[str, Any]:
    """Mean and sample std (n - 1) over the seeds present; n counts them, of `seeds`."""
    present = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
    xs = list(present.values())
    return {
        "mean": statistics.fmean(xs) if xs else None,
        "std": statistics.stdev(xs) if len(xs) > 1 else None,
        "n": len(xs),
        "seeds": seeds,
        "values": {str(k): v for k, v in sorted(present.items())},
    }


def t_interval(xs: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean: mean +- t_{n-1} * s / sqrt(n); None under 2 values."""
    from scipy.stats import t as student_t

    if len(xs) < 2:
        return None
    mean, sem = statistics.fmean(xs), statistics.stdev(xs) / math.sqrt(len(xs))
    half = float(student_t.ppf(0.5 + confidence / 2, len(xs) - 1)) * sem
    return mean - half, mean + half


def difference_stats(values: Mapping[int, float | None], seeds: int) -> dict[str, Any]:
    """aggregate() of paired differences plus the 95% t-interval and the positive seeds."""
    agg = aggregate(values, seeds)
    xs = list(agg["values"].values())
    ci = t_interval(xs)
    agg["ci95"] = list(ci) if ci else None
    agg["positive"] = sum(x > 0 for x in xs)
    return agg


def paired_difference(
    a: Mapping[int, float | None], b: Mapping[int, float | None]
) -> dict[int, float]:
    """a - b for every seed where both are present (students share their seed's data order)."""
    return {k: a[k] - b[k] for k in a if k in b and a[k] is not None and b[k] is not None}  # type: ignore[operator]


def _metric(run: Run, which: str) -> float | None:
    from icckd_cli.base.checkpoint import read_metadata
    from icckd_cli.training.rundir import MODEL_FILE

    if run.status() != "done":
        return None
    metrics = read_metadata(run.out / MODEL_FILE).get("metrics") or {}
    return (metrics.get(which) or {}).get("top1")


def _objective(cfg: TrainTeacherConfig) -> str:
    ce = f"CE (label smoothing {cfg.label_smoothing:g})" if cfg.label_smoothing else "CE"
    if cfg.icc_weight == 0:
        return "cross-entropy" if ce == "CE" else ce
    gate = "no gate" if cfg.margin <= -1 else f"margin {cfg.margin:g}"
    cache = f"K {cfg.queue_size}" if cfg.queue_size else "no cache"
    return f"{ce} + {cfg.icc_weight:g} L_intra ({gate}, tau {cfg.icc_temperature:g}, {cache})"


def _top1(runs: Mapping[int, Run]) -> dict[str, dict[int, float | None]]:
    """top-1 at the last ('final') and at the best epoch, by seed; None where not done."""
    return {w: {k: _metric(r, w) for k, r in runs.items()} for w in ("final", "best")}


def _last_best(top1: Mapping[str, Mapping[int, float | None]], n: int) -> dict[str, Any]:
    return {"last": aggregate(top1["final"], n), "best": aggregate(top1["best"], n)}


def _last_best_diff(diff: Mapping[str, Mapping[int, float | None]], n: int) -> dict[str, Any]:
    return {"last": difference_stats(diff["final"], n), "best": difference_stats(diff["best"], n)}


def collect(
    exp: Experiment,
    diversity: Mapping[str, Mapping[int, dict]],
    costs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the tables show, as JSON-ready numbers (costs: from measure_costs)."""
    o, n = exp.options, len(exp.options.seeds)
    nt = len(o.resolved_teacher_seeds())  # teachers are aggregated over their own seeds
    reference = next((t for t in exp.teachers if t.cross_entropy), None)
    teachers, teacher_differences = [], []
    for t in exp.teachers:
        div = diversity.get(t.name, {})
        teachers.append(
            dict(name=t.name, arch=t.config.arch, objective=_objective(t.config),
                 icc_weight=t.config.icc_weight, cross_entropy=t.cross_entropy,
                 top1=aggregate(_top1(exp.teacher_runs(t.name))["final"], nt),
                 diversity={key: aggregate({k: d.get(key) for k, d in div.items()}, nt)
                            for key in DIVERSITY_KEYS})
        )  # fmt: skip
        if reference is not None and t is not reference:
            ours, ref = _top1(exp.teacher_runs(t.name)), _top1(exp.teacher_runs(reference.name))
            gap = paired_difference(ours["final"], ref["final"])
            pair = dict(teacher=t.name, reference=reference.name)
            teacher_differences.append({**pair, "last": difference_stats(gap, nt)})
    base_top1 = None
    if exp.baseline is not None:
        base_top1 = _top1({r.seed: r for r in exp.runs if r.kind == "baseline"})
    students, differences, answers = [], [], []
    for s in exp.students:
        top1 = {}
        for t in exp.teachers:
            runs = {r.seed: r for r in exp.runs if (r.teacher, r.student) == (t.name, s.name)}
            top1[t.name] = _top1(runs)
            about = dict(student=s.name, method=s.config.method, arch=s.config.arch)
            students.append({**about, "teacher": t.name, **_last_best(top1[t.name], n)})
            if base_top1 is not None:  # what distilling from t adds over the student alone
                gain = {w: paired_difference(top1[t.name][w], base_top1[w]) for w in base_top1}
                pair = dict(student=s.name, method=s.config.method, teacher=t.name)
                answers.append({**pair, "reference": None, **_last_best_diff(gain, n)})
        for t in exp.teachers:
            if reference is None or t is reference:
                continue
            ours, ref = top1[t.name], top1[reference.name]
            diff = {w: paired_difference(ours[w], ref[w]) for w in ours}
            pair = dict(student=s.name, method=s.config.method, teacher=t.name)
            differences.append({**pair, "reference": reference.name, **_last_best_diff(diff, n)})
    answers += differences
    baseline = None
    if exp.baseline is not None and base_top1 is not None:
        baseline = {"arch": exp.baseline.arch, **_last_best(base_top1, n)}
    student_cfg = exp.students[0].config if exp.students else exp.baseline
    out = dict(name=o.name, dataset=o.dataset, train_per_class=o.train_per_class,
                teacher_train_per_class=exp.teachers[0].config.train_per_class,
                student_train_per_class=student_cfg.train_per_class if student_cfg else None,
                test_per_class=o.test_per_class, val_per_class=o.val_per_class,
                val_fraction=o.val_fraction, seeds=list(o.seeds), out=str(o.out),
                teacher_seeds=o.resolved_teacher_seeds(),
                temperature=o.temperature, command=exp.command, answers=answers,
                answers_summary=answers_sentence(answers), teachers=teachers,
                teacher_differences=teacher_differences, students=students,
                differences=differences, baseline=baseline)  # fmt: skip
    out["cost"] = cost_rows(out, costs)
    return out


def result_tables(results: Mapping[str, Any]) -> list[TableSpec]:
    """The answers first, then the teachers', their soft labels' and the students' tables."""
    seeds = len(results["seeds"])
    over = f"mean ± std over {seeds} seed{'s' if seeds > 1 else ''}"
    tseeds = len(results.get("teacher_seeds") or results["seeds"])
    t_over = f"mean ± std over {tseeds} seed{'s' if tseeds > 1 else ''}"
    teachers = results["teachers"]
    teacher_rows = [[t["name"], t["arch"], t["objective"], cell(t["top1"])] for t in teachers]
    for d in results.get("teacher_differences", []):
        teacher_rows.append(
            ["", "", f"{d['teacher']} minus {d['reference']}", diff_cell(d["last"])]
        )
    answers = answers_table(results)
    tables = [] if answers is None else [answers]
    tables += [
        TableSpec(
            f"teachers on {results['dataset']} (top-1 %, {t_over})",
            ["teacher", "arch", "objective", "top-1 (last epoch)"],
            teacher_rows,
            [DIFF_NOTE] if results.get("teacher_differences") else [],
        ),
        TableSpec(
            f"soft-label diversity of the teachers (test split, T = {results['temperature']:g})",
            ["teacher", "intra/inter (soft labels)", "intra/inter (features)", "mean p(target)"],
            [[t["name"], *(cell(t["diversity"][k], 4) for k in DIVERSITY_KEYS)] for t in teachers],
            ["intra/inter: mean intra-class distance over mean distance between class centroids"],
        ),
    ]
    rows = []
    for name in dict.fromkeys(r["student"] for r in results["students"]):
        for r in (r for r in results["students"] if r["student"] == name):
            shown = name if name == r["method"] else f"{name} ({r['method']})"
            rows.append([shown, r["arch"], r["teacher"], cell(r["last"]), cell(r["best"])])
        for d in (d for d in results["differences"] if d["student"] == name):
            diff = f"{d['teacher']} minus {d['reference']}"
            rows.append(["", "", diff, diff_cell(d["last"]), diff_cell(d["best"])])
    if results["baseline"] is not None:
        b = results["baseline"]
        rows.append(["alone (CE)", b["arch"], "none", cell(b["last"]), cell(b["best"])])
    held = validation_phrase(results)
    best_note = (
        f"best on validation: top-1 on the test split at the epoch of the highest top-1 on "
        f"{held} held out of the training split (never trained on)"
        if held
        else "best epoch is picked on the test split itself, so it flatters; last epoch is "
        "the honest number"
    )
    notes = [
        "'minus' rows: the paired difference per seed (student seed k from teacher seed k); "
        + DIFF_NOTE,
        best_note,
    ]
    if rows:
        title = f"students on {results['dataset']} (top-1 %, {over})"
        best = "best on validation" if held else "best epoch"
        columns = ["student", "arch", "teacher", "last epoch", best]
        tables.append(TableSpec(title, columns, rows, notes))
    cost = cost_table(results)
    if cost is not None:
        tables.append(cost)
    return with_matching(results, tables)  # issue 29: matched teachers, the teacher gap


def validation_phrase(results: Mapping[str, Any]) -> str:
    """'5 images per class' or '10% of each class' held out for validation; '' for none."""
    if results.get("val_per_class"):
        n = results["val_per_class"]
        return f"{n} image{'s' if n > 1 else ''} per class"
    if results.get("val_fraction"):
        return f"{100 * results['val_fraction']:g}% of each class"
    return ""


def _images(per_class: int | None) -> str:
    return "all training images" if per_class is None else f"{per_class} images per class"


def _teacher_seeds(results: Mapping[str, Any]) -> str:
    """' (teachers: seeds 0, 1)' when the teachers have seeds of their own, else ''."""
    tseeds = results.get("teacher_seeds") or results["seeds"]
    if list(tseeds) == list(results["seeds"]):
        return ""
    shown = ", ".join(map(str, tseeds))
    return f" (teachers: seeds {shown}; student seed number i from teacher seed number i mod n)"


def results_markdown(results: Mapping[str, Any]) -> str:
    """The tables as Markdown, with what was run."""
    subset = ", ".join(
        f"{k.replace('_', ' ')} {results[k]}"
        for k in ("train_per_class", "test_per_class", "val_per_class", "val_fraction")
        if results.get(k)
    )
    teacher_pc = results.get("teacher_train_per_class", results["train_per_class"])
    student_pc = results.get("student_train_per_class", results["train_per_class"])
    if teacher_pc != student_pc:  # per-role subsets: say who trained on what
        roles = f"teachers on {_images(teacher_pc)}, students on {_images(student_pc)}"
        test = results["test_per_class"]
        subset = roles + (f", test per class {test}" if test else "")
        if validation_phrase(results):
            subset += f", {validation_phrase(results)} held out for validation"
    lines = [
        f"# {results['name']}",
        "",
        f"Data set {results['dataset']}{f' ({subset})' if subset else ''}, seeds "
        f"{', '.join(map(str, results['seeds']))}{_teacher_seeds(results)}; runs under "
        f"`{results['out']}`. Made by "
        f"`{results['command']}`.",
        "",
    ]
    for t in result_tables(results):
        lines += [
            f"## {t.title}",
            "",
            "| " + " | ".join(t.columns) + " |",
            "|" + "---|" * len(t.columns),
        ]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t.rows]
        lines += ["", *[f"- {n}" for n in t.notes], *([""] if t.notes else [])]
        if t.figure:
            lines += [f"![{t.figure_title or t.title}]({t.figure})", ""]
    figures = results.get("figures") or []  # written by matrix.write_curves
    if figures:
        lines += ["## learning curves", "", *(f"![{f['title']}]({f['file']})\n" for f in figures)]
    return "\n".join(lines)


def write_results(exp: Experiment, results: Mapping[str, Any]) -> None:
    """OUT/results.json and OUT/results.md."""
    from icckd_cli.base.atomic import write_text_atomic

    root = Path(exp.options.out)
    write_text_atomic(root / "results.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(root / "results.md", results_markdown(results))
