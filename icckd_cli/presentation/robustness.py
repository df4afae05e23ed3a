"""The tables `eval` prints after its main one: per-class top-1 (with the long-tail groups)
and top-1 under corruptions (corruption x severity, their mean, the clean top-1, the ratio)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from icckd_cli.presentation.console import note, out
from icckd_cli.presentation.tables import key_value_table

SHOWN_CLASSES = 20  # more classes than this: the summary rows, the rest in --format json


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def per_class_table(m: dict[str, Any]) -> None:
    """Balanced top-1, the many/medium/few groups, and each class when there are few."""
    per_class = m.get("per_class_top1")
    if per_class is None:
        return
    rows: list[tuple[str, Any]] = [("balanced top-1 %", _pct(m.get("balanced_top1")))]
    counts = m.get("train_counts")
    groups = m.get("groups")
    if groups is not None:
        rows += [
            ("many-shot top-1 % (> 100 images)", _pct(groups["many"])),
            ("medium-shot top-1 % (20-100)", _pct(groups["medium"])),
            ("few-shot top-1 % (< 20)", _pct(groups["few"])),
        ]
    if len(per_class) <= SHOWN_CLASSES:
        for c, acc in enumerate(per_class):
            trained = f"  ({counts[c]:,} training images)" if counts else ""
            rows.append((f"class {c} top-1 %", _pct(acc) + trained))
    key_value_table("per class", rows)
    if len(per_class) > SHOWN_CLASSES:
        note(f"{len(per_class)} classes: each one's top-1 is in --format json (per_class_top1)")


def corruption_table(c: dict[str, Any]) -> None:
    """Top-1 by corruption (rows) and severity (columns), then mean, clean and their ratio."""
    severities = sorted({r["severity"] for r in c["results"]})
    title = f"top-1 % under corruptions ({c['suite']}; s1-s5: severity)"
    table = Table(title=title, title_justify="left")
    table.add_column("corruption", style="bold")
    for s in severities:
        table.add_column(f"s{s}", justify="right")
    table.add_column("mean", justify="right")
    by_name: dict[str, dict[int, float]] = {}
    for r in c["results"]:
        by_name.setdefault(r["corruption"], {})[r["severity"]] = r["top1"]
    for name, row in by_name.items():
        cells = [_pct(row.get(s)) for s in severities]
        table.add_row(name, *cells, _pct(sum(row.values()) / len(row)))
    out.print(table)
    ratio = "n/a" if c["relative"] is None else f"{c['relative']:.3f}"
    key_value_table(
        "corruption summary",
        [
            ("mean top-1 % (all corruptions and severities)", _pct(c["mean_top1"])),
            ("clean top-1 %", _pct(c["clean_top1"])),
            ("mean / clean", ratio),
        ],
    )
    if c["suite"] == "icckd-builtin":
        note("icckd-builtin: generated from the test split; not comparable with CIFAR-10-C")


def eval_detail_tables(m: dict[str, Any]) -> None:
    """What follows eval's table: per class, then corruptions when evaluated."""
    per_class_table(m)
    if m.get("corruptions") is not None:
        corruption_table(m["corruptions"])
