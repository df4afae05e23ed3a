"""Table cells and the plain-string table that results, answers and the report share.

The lowest module of experiment/: results.py and answers.py both import it, never each other
in a circle (answers.py builds on these cells; results.py on answers.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TableSpec:
    """A table as plain strings, rendered by rich on the terminal and as Markdown on disk."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    figure: str | None = None  # a figure beside results.md that shows this table's numbers
    figure_title: str | None = None
    key: str = ""  # which table: answers, teachers, diversity, students, transfer, cost, ...


def cell(agg: Mapping[str, Any], digits: int = 2, signed: bool = False) -> str:
    """'97.22 ± 0.39'; one seed: '97.22 ± -'; missing seeds counted; none: 'n/a (0/2 seeds)'."""
    n, seeds = agg["n"], agg["seeds"]
    if n == 0:
        return f"n/a (0/{seeds} seeds)"
    sign = "+" if signed else ""
    text = f"{agg['mean']:{sign}.{digits}f} ± "
    text += "-" if agg["std"] is None else f"{agg['std']:.{digits}f}"
    return text if n == seeds else f"{text} ({n}/{seeds} seeds)"


def diff_cell(agg: Mapping[str, Any], digits: int = 2) -> str:
    """'+0.52 [-0.31, +1.35] 3/4': mean, 95% t-interval over seeds, seeds above 0."""
    n, seeds = agg["n"], agg["seeds"]
    if n == 0:
        return f"n/a (0/{seeds} seeds)"
    ci = agg.get("ci95")
    span = f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if ci else "[-]"
    text = f"{agg['mean']:+.{digits}f} {span} {agg['positive']}/{n}"
    return text if n == seeds else f"{text} ({n}/{seeds} seeds)"
