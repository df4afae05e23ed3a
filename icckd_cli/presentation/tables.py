"""The tables a command prints on stdout when it is done: runs, evaluation, export, models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from icckd_cli.base.units import si, timing_note
from icckd_cli.presentation.console import fmt, note, out


def key_value_table(title: str, rows: Sequence[tuple[str, Any]]) -> None:
    """A two-column table."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    for k, v in rows:
        table.add_row(k, fmt(v))
    out.print(table)


def fetched_table(r: dict[str, Any]) -> None:
    """The table printed by `icckd fetch-teacher`."""
    top1 = "not evaluated" if r["top1"] is None else f"{r['top1']:.2f} % ({r['dataset']} test)"
    rows = [
        ("checkpoint", r["checkpoint"]),
        ("teacher", r["name"]),
        ("architecture", r["arch"]),
        ("data set", f"{r['dataset']} ({r['num_classes']} classes)"),
        ("source", r["url"]),
        ("sha256", r["sha256"] + ("" if r["verified"] else " (no published hash to check)")),
        ("top-1", top1),
    ]
    key_value_table("published teacher", rows)


def run_summary(kind: str, result: Any) -> None:
    """The table printed after train-teacher or distill."""
    rows = [
        ("checkpoint", str(result.checkpoint)),
        ("top-1 (last epoch)", result.final["top1"]),
        ("top-5 (last epoch)", result.final["top5"]),
        ("NLL", result.final["nll"]),
        ("ECE", result.final["ece"]),
        *best_rows(result.best),
        ("parameters", f"{result.params:,}"),
        ("time", f"{result.elapsed:.1f} s"),
    ]
    key_value_table(f"{kind} finished", rows)


def best_rows(best: dict[str, Any]) -> list[tuple[str, str]]:
    """The best epoch's rows: on validation (and the test split there) or on the test split."""
    if best.get("chosen_on") != "val":
        return [("best top-1", f"{best['top1']:.2f} (epoch {best['epoch']})")]
    return [
        ("best on validation", f"epoch {best['epoch']} (val top-1 {best['val_top1']:.2f})"),
        ("top-1 at best-val epoch", f"{best['top1']:.2f}"),
    ]


def eval_table(m: dict[str, Any]) -> None:
    """The table printed by `icckd eval` (and `--cost-only`, without the accuracy rows)."""
    rows: list[tuple[str, Any]] = [
        ("checkpoint", m["checkpoint"]),
        ("architecture", m["arch"]),
        ("kind", m["kind"]),
    ]
    if "top1" in m:
        rows += [
            ("data set", f"{m['dataset']} ({m['split']}, {m['n']} images)"),
            ("top-1 %", m["top1"]),
            ("top-5 %", m["top5"]),
            ("NLL", m["nll"]),
            ("ECE", m["ece"]),
        ]
    size = m["image_size"]
    rows += [
        ("parameters", f"{m['params']:,}"),
        ("size", f"{m['size_mb']:.2f} MB (tensors as stored, 1 MB = 10^6 bytes)"),
        ("MACs", f"{si(m['macs'])} (one {size}x{size} image; FLOPs = 2 x MACs)"),
    ]
    t = m.get("timing")
    if t:
        reps = t["reps"]
        rows.append(
            ("latency", f"{m['latency_ms']:.3f} ms (batch 1; {timing_note(t)}; median of "
             f"{reps['latency']} runs)")
        )  # fmt: skip
        if m.get("throughput") is not None:
            rows.append(
                ("throughput", f"{m['throughput']:,.0f} images/s (batch {t['batch_size']}; "
                 f"median of {reps['throughput']} runs)")
            )  # fmt: skip
    key_value_table("evaluation" if "top1" in m else "cost", rows)


def export_table(r: dict[str, Any]) -> None:
    """The table printed by `icckd export`."""
    p = r["parity"]
    shape = "(" + ", ".join(str(d) for d in r["input"]["shape"]) + ")"
    rows = [
        ("file", f"{r['out']} ({r['bytes']:,} bytes, {r['exporter']})"),
        ("beside it", r["sidecar"]),
        ("input", f"images {shape}, RGB in 0..1 (normalisation inside the graph)"),
        ("parity", f"{p['inputs']} through {p['runtime']}"),
        ("largest difference", f"{p['max_abs_diff']:.3g} (tolerance {p['tolerance']:g} x "
         f"{p['logit_scale']:.3g})"),
        ("top-1 agrees", f"{p['top1_agree']} of {p['images']}"),
    ]  # fmt: skip
    key_value_table(f"exported {r['arch']} as {r['format']}", rows)


def models_table(
    rows: list[tuple[str, int | None, int | None, int | None]], title: str = "model zoo"
) -> None:
    """`icckd models`: name, parameters at 100 classes, feature size, intended input size."""
    table = Table(title=f"{title} (parameters at 100 classes)", title_justify="left")
    table.add_column("architecture")
    table.add_column("parameters", justify="right")
    table.add_column("feature dim", justify="right")
    table.add_column("input", justify="right")
    for name, params, dim, size in rows:
        table.add_row(
            name,
            "-" if params is None else f"{params:,}",
            "-" if dim is None else str(dim),
            "-" if size is None else f"{size}x{size}",
        )
    out.print(table)


def experiment_plan(runs: Sequence[tuple[str, str]]) -> None:
    """`icckd experiment --dry-run`: every run and its state."""
    table = Table(title="runs of the experiment", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("run")
    table.add_column("state")
    for i, (label, state) in enumerate(runs, 1):
        table.add_row(str(i), label, state)
    out.print(table)


def experiment_tables(tables: Sequence[Any], written: Sequence[str] = ()) -> None:
    """The results tables of an experiment (title, columns, rows, notes of each)."""
    for spec in tables:
        table = Table(title=spec.title, title_justify="left")
        for i, name in enumerate(spec.columns):
            numeric = all("±" in r[i] or r[i].startswith("n/a") for r in spec.rows if r[i])
            table.add_column(name, justify="right" if numeric and spec.rows else "left")
        for row in spec.rows:
            table.add_row(*row)
        out.print(table)
        for line in spec.notes:
            out.print(f"  {line}", highlight=False, markup=False)  # notes quote TOML tables
        out.print()
    for path in written:
        note(f"wrote {path}")
