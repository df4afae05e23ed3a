"""The answers an experiment was run for, first: paired differences and one sentence on them.

Each answer is a paired difference at the last epoch, student seed k minus its reference of
seed k: a student distilled from a teacher minus the student trained alone (reference None),
or minus the same student distilled from the cross-entropy teacher (reference its name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from icckd_cli.commands.experiment.tables import TableSpec, diff_cell

MATCHED = "students of accuracy-matched teachers"
ANSWERS_NOTE = (
    "paired by seed (seed k minus seed k), top-1 points at the last epoch: mean [95% "
    "t-interval] and how many seeds are above 0"
)


def _sides(a: Mapping[str, Any]) -> tuple[str, str]:
    """('kd from icc', 'the student alone') or ('kd from icc', 'kd from ce')."""
    ours = f"{a['student']} from {a['teacher']}"
    if a.get("metric"):  # transfer/measures.py's answers: on another measure than top-1
        ours += f" ({a['metric']})"
    ref = a.get("reference")
    return ours, "the student alone" if ref is None else f"{a['student']} from {ref}"


def answer_label(a: Mapping[str, Any]) -> str:
    """The row's name: 'kd from icc minus the student alone'."""
    ours, ref = _sides(a)
    return f"{ours} minus {ref}"


def _clause(a: Mapping[str, Any]) -> str:
    ours, ref = _sides(a)
    d = a["last"]
    n, ci, up = d["n"], d.get("ci95"), d.get("positive", 0)
    if n == 0:
        return f"{ours} against {ref}: no seed finished yet"
    mean = d["mean"]
    if ci is None:
        return f"{ours} against {ref}: {mean:+.2f} points on one seed, too few for an interval"
    if ci[0] > 0:
        return (
            f"{ours} adds {mean:.2f} points over {ref} (the 95% interval lies above 0; "
            f"{up} of {n} seeds higher)"
        )
    if ci[1] < 0:
        return (
            f"{ours} loses {-mean:.2f} points against {ref} (the 95% interval lies below 0; "
            f"{n - up} of {n} seeds lower)"
        )
    return (
        f"{ours} against {ref}: {mean:+.2f} points, not resolved (the 95% interval "
        f"[{ci[0]:+.2f}, {ci[1]:+.2f}] holds 0; {up} of {n} seeds higher)"
    )


def answers_sentence(answers: Sequence[Mapping[str, Any]]) -> str:
    """One sentence, worded from the numbers, on what each answer shows ('' without any)."""
    if not answers:
        return ""
    return "At the last epoch, paired by seed: " + "; ".join(map(_clause, answers)) + "."


def answers_table(results: Mapping[str, Any]) -> TableSpec | None:
    """The answers as the first table, the sentence under it; None when there are none."""
    answers = results.get("answers") or []
    if not answers:
        return None
    subset = results.get("student_train_per_class")
    sees = f"{subset} training images per class" if subset else "all training images"
    if any(r.get("labels") for r in results.get("students") or []):
        sees += ", some without labels: see the students table"
    title = f"what distillation adds on {results['dataset']} (students see {sees})"
    if results.get("matched") is not None:
        title += f" ({MATCHED})"
    rows = [[answer_label(a), diff_cell(a["last"])] for a in answers]
    notes = [results.get("answers_summary") or answers_sentence(answers), ANSWERS_NOTE]
    columns = ["answer", "difference (top-1 points, last epoch)"]
    return TableSpec(title, columns, rows, notes, key="answers")
