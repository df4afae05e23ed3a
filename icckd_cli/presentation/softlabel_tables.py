"""The tables of `icckd inspect-softlabels`: checkpoints side by side, then per class."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from icckd_cli.presentation.console import fmt, out

SUMMARY_ROWS = (
    ("accuracy", "top-1 %"),
    ("target_prob", "mean target probability"),
    ("nontarget_mass", "non-target mass"),
    ("entropy", "entropy of p"),
    ("entropy_nontarget", "entropy of non-target q"),
    ("intra_distance", "intra-class distance"),
    ("inter_distance", "inter-class distance"),
    ("ratio", "intra / inter (soft labels)"),
    ("feature_ratio", "intra / inter (features)"),
    ("nc1", "NC1 tr(Sw Sb+)/C"),
    ("effective_rank", "effective rank (mean)"),
)


def _objective_label(objective: dict[str, Any]) -> str:
    terms = objective.get("terms", {})
    if not terms:
        return "-"
    return " + ".join(f"{w:g} {n}" if w != 1 else n for n, w in terms.items())


def softlabel_summary(results: list[Any], temperature: float, split: str) -> None:
    """One column per checkpoint, one row per statistic; each column's full path below."""
    table = Table(
        title=f"soft-label diversity ({split} split, T = {temperature:g})", title_justify="left"
    )
    table.add_column("statistic", style="bold")
    for r in results:
        table.add_column(r.name, justify="right")
    table.add_row("architecture", *[r.arch for r in results])
    table.add_row("objective", *[_objective_label(r.objective) for r in results])
    for key, label in SUMMARY_ROWS:
        digits = 2 if key == "accuracy" else 4
        table.add_row(label, *[fmt(r.stats.overall.get(key), digits) for r in results])
    out.print(table)
    # the columns are named by the shortest part of the path that tells them apart
    for r in results:
        out.print(f"  {escape(r.name)}: {escape(str(r.path))}", highlight=False)


def softlabel_per_class(results: list[Any], all_classes: bool, shown: int = 5) -> None:
    """Per-class intra-class distance and target probability, most and least diverse first."""
    first = results[0]
    rows = [c for c in first.stats.per_class if c["count"]]
    rows.sort(key=lambda c: -c["intra_distance"])
    if not all_classes and len(rows) > 2 * shown:
        rows = rows[:shown] + rows[-shown:]
        title = f"per class: the {shown} most and {shown} least diverse (by {first.name})"
    else:
        title = "per class (sorted by intra-class distance of the first checkpoint)"
    table = Table(title=title, title_justify="left")
    table.add_column("class")
    for r in results:
        table.add_column(f"{r.name}\nintra", justify="right")
        table.add_column(f"{r.name}\np(y)", justify="right")
    for c in rows:
        k = int(c["class"])
        cells = []
        for r in results:
            pc = r.stats.per_class[k]
            cells += [fmt(pc["intra_distance"], 4), fmt(pc["target_prob"], 3)]
        table.add_row(first.classes[k], *cells)
    out.print(table)
