"""The figures of runs: learning curves of several runs, accuracy against latency of models."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from icckd_cli.base.atomic import atomic_write

# ----------------------------------------------------------------------------- learning curves

# What a metrics.jsonl key means, for the panel's axis; others are shown by their key alone.
METRIC_LABELS = {
    "train_loss": "training loss (weighted sum)",
    "train_ce": "training cross-entropy (unweighted)",
    "train_icc": "training L_intra",
    "train_icc_gate_pass": "fraction of anchors past the gate",
    "train_icc_negatives": "negatives per counted anchor",
    "top1": "test top-1 (%)",
    "top5": "test top-5 (%)",
    "nll": "test NLL",
    "ece": "test ECE",
    "lr": "learning rate",
    "images_per_s": "training images / s",
    "time": "seconds per epoch",
}
PANEL_SIZE = (4.6, 3.4)  # inches per panel; the figure's size follows from the panel grid
CURVE_DPI = 100
STYLES = ("-", "--", ":", "-.")


@dataclass
class Curve:
    """One run's records; runs of one group share a colour and differ in line style."""

    label: str
    history: list[dict[str, Any]]
    decay: list[int] = field(default_factory=list)  # lr drops after these epochs
    group: str | None = None


def panel_grid(count: int) -> tuple[int, int]:
    """(rows, columns) of the panels: up to three side by side, four as two by two."""
    cols = 2 if count == 4 else min(max(count, 1), 3)
    return math.ceil(max(count, 1) / cols), cols


def learning_curves_figure(curves: list[Curve], metrics: list[str], title: str = "") -> Figure:
    """One panel per metric, one line per run over epochs, lr decays as dotted lines."""
    rows, cols = panel_grid(len(metrics))
    legend_rows = math.ceil((len(curves) + 1) / 4)
    extra = 0.25 * legend_rows + 0.1 + (0.3 if title else 0.0)  # inches: legend and title
    # constrained layout places the title, the panels and the legend below them
    fig = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows + extra), layout="constrained")
    groups = list(dict.fromkeys(c.group or c.label for c in curves))
    seen: dict[str, int] = {}
    styles = []
    for c in curves:  # colour by group, line style by member of the group
        g = c.group or c.label
        styles.append((f"C{groups.index(g) % 10}", STYLES[seen.get(g, 0) % len(STYLES)]))
        seen[g] = seen.get(g, 0) + 1
    last = max((int(r["epoch"]) for c in curves for r in c.history), default=1)
    decays = sorted({e for c in curves for e in c.decay if e < last})
    handles: list[Any] = []
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        for c, (colour, style) in zip(curves, styles, strict=True):
            points = [(int(r["epoch"]), r[metric]) for r in c.history if _number(r.get(metric))]
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            marker = "." if len(xs) <= 40 else None
            (line,) = ax.plot(
                xs,
                ys,
                color=colour,
                linestyle=style,
                marker=marker,
                label=c.label,
                linewidth=1.4,
                drawstyle="steps-mid" if metric == "lr" else "default",  # lr changes in steps
            )
            if k == 0:
                handles.append(line)
        # the lr drops between epoch e and e + 1
        marks = [ax.axvline(e + 0.5, color="0.55", linestyle=":", linewidth=1.2) for e in decays]
        if marks and k == 0:
            marks[0].set_label("lr decay")
            handles.append(marks[0])
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ncol = max(min(len(handles), 4), 1)
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def write_learning_curves(
    curves: list[Curve], metrics: list[str], path: Path, title: str = ""
) -> Path:
    """The learning-curve figure as a PNG (or the format its suffix names), written atomically."""
    return save_atomic(learning_curves_figure(curves, metrics, title), path)


def save_atomic(fig: Figure, path: Path) -> Path:
    """A figure in the format its suffix names, written atomically."""
    path = Path(path)
    FigureCanvasAgg(fig)
    # atomic: a viewer refreshing the figure of a live run never reads half a file
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=CURVE_DPI, format=path.suffix[1:].lower()))
    return path


# ----------------------------------------------------------------------------- accuracy vs cost

ROLE_MARKERS = {"teacher": "s", "student": "o", "baseline": "^"}


@dataclass
class CostPoint:
    """One model of an experiment: its batch-1 latency (ms) and top-1 (mean, std over seeds)."""

    label: str
    role: str  # teacher, student or baseline
    latency_ms: float
    top1: float
    std: float | None = None


def accuracy_latency_figure(points: list[CostPoint], title: str = "") -> Figure:
    """Top-1 against batch-1 latency, one marker per model, error bars of one std."""
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for k, p in enumerate(points):
        ax.errorbar(
            [p.latency_ms], [p.top1], yerr=None if p.std is None else [[p.std], [p.std]],
            marker=ROLE_MARKERS.get(p.role, "o"), color=f"C{k % 10}", linestyle="none",
            capsize=3, markersize=7, label=f"{p.label} ({p.role})",
        )  # fmt: skip
    spread = max(p.latency_ms for p in points) / max(min(p.latency_ms for p in points), 1e-9)
    if spread > 10:  # teachers and students an order of magnitude apart: a log axis
        ax.set_xscale("log")
    ax.set_xlabel("latency at batch 1 (ms)")
    ax.set_ylabel("test top-1 (%, last epoch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def write_accuracy_latency(points: list[CostPoint], path: Path, title: str = "") -> Path:
    """The accuracy-against-latency figure as a PNG, written atomically."""
    return save_atomic(accuracy_latency_figure(points, title), path)
