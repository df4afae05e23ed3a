"""The results as tables (the terminal's and results.md's) and as one Markdown page.

The answers first (answers.py), then the teachers, their soft labels' diversity, the
students, and the accuracy-against-cost table (costs.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from icckd_cli.commands.experiment.answers import answers_table
from icckd_cli.commands.experiment.costs import cost_table
from icckd_cli.commands.experiment.matched.tables import MATCHED, with_matching
from icckd_cli.commands.experiment.tables import TableSpec, cell, diff_cell
from icckd_cli.commands.experiment.transfer.table import transfer_table

DIVERSITY_KEYS = ("ratio", "feature_ratio", "target_prob")
DIFF_NOTE = (
    "'minus' cells: mean difference [95% t-interval over seeds] and how many seeds are "
    "above 0; an interval that holds 0 resolves no effect"
)


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
            key="teachers",
        ),
        TableSpec(
            f"soft-label diversity of the teachers (test split, T = {results['temperature']:g})",
            ["teacher", "intra/inter (soft labels)", "intra/inter (features)", "mean p(target)"],
            [[t["name"], *(cell(t["diversity"][k], 4) for k in DIVERSITY_KEYS)] for t in teachers],
            ["intra/inter: mean intra-class distance over mean distance between class centroids"],
            key="diversity",
        ),
    ]
    rows = []
    for name in dict.fromkeys(r["student"] for r in results["students"]):
        for r in (r for r in results["students"] if r["student"] == name):
            shown = name if name == r["method"] else f"{name} ({r['method']})"
            shown += f"; {r['labels']}" if r.get("labels") else ""
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
        who = MATCHED if results.get("matched") is not None else "students"
        title = f"{who} on {results['dataset']} (top-1 %, {over})"
        best = "best on validation" if held else "best epoch"
        columns = ["student", "arch", "teacher", "last epoch", best]
        tables.append(TableSpec(title, columns, rows, notes, key="students"))
    transfer = transfer_table(results)  # negative transfer (experiment/transfer/measures.py)
    tables += [] if transfer is None else [transfer]
    cost = cost_table(results)
    if cost is not None:
        tables.append(cost)
    return with_matching(results, tables)  # matched teachers, the teacher gap


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
    if results.get("imbalance_factor", 1) != 1:  # transfer/measures.py: long-tailed training
        subset += f"{', ' if subset else ''}imbalance factor {results['imbalance_factor']:g}"
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
