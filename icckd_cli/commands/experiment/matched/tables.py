"""The tables of accuracy-matched teachers, and the student gain beside the teacher gap.

`with_matching(results, tables)` is applied to result_tables' list (the answers' and students'
titles say "students of accuracy-matched teachers" where those tables are built): under
match_teachers a table shows each teacher's matched epoch with its validation and test top-1,
after the answers (the table keyed "answers"); every experiment whose answers
compare two teachers' students gains the table of teacher difference, student difference and,
with 3 seeds or more, the line of one on the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from icckd_cli.commands.experiment.answers import MATCHED, answer_label
from icckd_cli.commands.experiment.tables import TableSpec, diff_cell

__all__ = ["MATCHED", "gap_table", "line_cells", "matched_table", "with_matching"]
WIDE_NOTE = (
    "with few seeds this interval is wide (t = 12.71 on 3 seeds, 4.30 on 4, 3.18 on 5): "
    "an interval that holds 0 says nothing either way; more seeds narrow it"
)
LINE_NOTE = (
    "line: least squares of the student difference on the teacher difference across seeds; "
    "the intercept is the student gain at equal teacher accuracy, with its 95% t-interval "
    "(n - 2 degrees of freedom); it needs 3 seeds or more"
)


def with_matching(results: Mapping[str, Any], tables: list[TableSpec]) -> list[TableSpec]:
    """result_tables' list with the matched teachers' and the teacher gap's after the answers."""
    extra = [t for t in (matched_table(results), gap_table(results)) if t is not None]
    at = 1 if tables and tables[0].key == "answers" else 0
    return tables[:at] + extra + tables[at:]


def matched_table(results: Mapping[str, Any]) -> TableSpec | None:
    """Per teacher seed: the target and each teacher's matched epoch and top-1; None when off."""
    matched = results.get("matched")
    if matched is None:
        return None
    rows = []
    for tseed, m in sorted(matched.items(), key=lambda kv: int(kv[0])):
        for name, c in m["teachers"].items():
            rows.append(
                [tseed, f"{m['target_val_top1']:.2f}", name, str(c["epoch"]),
                 f"{c['val_top1']:.2f}", _num(c.get("test_top1"))]
            )  # fmt: skip
    notes = [
        "per teacher seed, the target is the lowest of the teachers' best validation top-1; "
        "each teacher gives the first evaluated epoch whose validation top-1 reaches it, and "
        "its students distill from that epoch's weights (chosen on validation only)",
    ]
    if not rows:
        notes.append("no teacher seed finished yet")
    columns = ["teacher seed", "target (val)", "teacher", "epoch", "val top-1", "test top-1"]
    title = f"accuracy-matched teachers on {results['dataset']}"
    return TableSpec(title, columns, rows, notes, key="matched")


def gap_table(results: Mapping[str, Any]) -> TableSpec | None:
    """Teacher and student differences side by side, and the line; None without such answers."""
    rows = []
    for a in results.get("answers") or []:
        if a.get("reference") is None or "teacher_difference" not in a:
            continue
        rows.append(
            [answer_label(a), diff_cell(a["teacher_difference"]), diff_cell(a["last"]),
             *line_cells(a.get("line"))]
        )  # fmt: skip
    if not rows:
        return None
    which = "matched epoch" if results.get("matched") is not None else "last epoch"
    columns = [
        "answer",
        f"teacher difference ({which})",
        "student difference",
        "slope",
        "intercept [95% interval]",
    ]
    title = "the student gain a teacher's accuracy does not explain (top-1 points, test split)"
    return TableSpec(title, columns, rows, [LINE_NOTE, WIDE_NOTE], key="gap")


def line_cells(line: Mapping[str, Any] | None) -> list[str]:
    """[slope, 'intercept [lo, hi]']; '-' with a reason where there is no line."""
    if line is None:
        return ["-", "- (needs 3 seeds)"]
    if line.get("slope") is None:
        return ["-", "- (teacher differences all equal)"]
    lo, hi = line["intercept_ci95"]
    return [f"{line['slope']:+.2f}", f"{line['intercept']:+.2f} [{lo:+.2f}, {hi:+.2f}]"]


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"
