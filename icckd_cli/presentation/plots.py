"""Every matplotlib figure: soft-label diversity of checkpoints, learning curves of runs."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from icckd_cli.base.errors import IcckdError
from icckd_cli.metrics.softlabels import SoftLabelStats, pca_2d

# Up to this many classes the per-class figure draws grouped bars; beyond, lines read better.
MAX_BAR_CLASSES = 20
DPI = 130


def _save(fig: Figure, path: Path) -> Path:
    # A figure on its own Agg canvas, not pyplot: no global state, safe without a display.
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def _temperature(results: list[tuple[str, SoftLabelStats]]) -> str:
    temps = sorted({s.temperature for _, s in results})
    return "T=" + ", ".join(f"{t:g}" for t in temps)


def _label(name: str, stats: SoftLabelStats, results: list[tuple[str, SoftLabelStats]]) -> str:
    # Name the temperature per checkpoint only when they differ.
    same = len({s.temperature for _, s in results}) == 1
    return name if same else f"{name} (T={stats.temperature:g})"


def _per_class(results: list[tuple[str, SoftLabelStats]], names: list[str], path: Path) -> Path:
    n = len(names)
    bars = n <= MAX_BAR_CLASSES
    fig = Figure(figsize=(min(max(6.0, 0.45 * n * (len(results) if bars else 0.5)), 16.0), 4.8))
    ax = fig.add_subplot()
    width = 0.8 / len(results)
    for i, (name, stats) in enumerate(results):
        y = [row["intra_distance"] for row in stats.per_class]
        label = _label(name, stats, results)
        if bars:
            xs = [k - 0.4 + width * (i + 0.5) for k in range(n)]
            ax.bar(xs, y, width=width, label=label)
        else:
            ax.plot(range(n), y, marker=".", linewidth=1, label=label)
    step = max(1, math.ceil(n / 50))  # keep at most ~50 tick labels
    ax.set_xticks(range(0, n, step))
    # Tilt the names once they would run into each other (about 60 characters fit in a row).
    tilt = len(names[::step]) * max((len(k) for k in names), default=0) > 60
    ax.set_xticklabels(names[::step], rotation=35 if tilt else 0, ha="right" if tilt else "center")
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("class")
    ax.set_ylabel("mean pairwise L2 distance of p")
    ax.set_title(
        f"Intra-class soft-label diversity per class (p = softmax(z / T), {_temperature(results)})"
    )
    # Outside the axes: inside, it hides the bars of the first classes.
    ax.legend(title="checkpoint", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _ratio(results: list[tuple[str, SoftLabelStats]], path: Path) -> Path:
    fig = Figure(figsize=(max(8.0, 3.2 * len(results) + 2.0), 4.8))
    labels = [textwrap.fill(_label(name, s, results), 16) for name, s in results]
    panels = [
        ("ratio", f"soft labels p ({_temperature(results)})"),
        ("feature_ratio", "penultimate features (raw)"),
    ]
    colours = [f"C{i % 10}" for i in range(len(results))]
    for j, (key, what) in enumerate(panels):
        ax = fig.add_subplot(1, 2, j + 1)
        values = [s.overall[key] for _, s in results]
        drawn = [0.0 if math.isnan(v) else v for v in values]
        ax.bar(range(len(results)), drawn, color=colours)
        for i, v in enumerate(values):
            ax.annotate(
                "n/a" if math.isnan(v) else f"{v:.3f}",
                (i, drawn[i]),
                ha="center",
                va="bottom",
                xytext=(0, 2),
                textcoords="offset points",
                fontsize="small",
            )
        ax.set_xticks(range(len(results)))
        ax.set_xticklabels(labels, fontsize="small")
        ax.set_ylabel("intra / inter-class distance")
        ax.set_title(what)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Intra-class over inter-class distance (higher: more diverse within classes)")
    fig.tight_layout()
    return _save(fig, path)


def _pca(
    results: list[tuple[str, SoftLabelStats]], names: list[str], count: int, path: Path
) -> Path:
    # The same classes in every panel: the first `count` that every checkpoint has seen.
    common = sorted(set.intersection(*(set(s.examples) for _, s in results)))[:count]
    blocks = [s.examples[k] for _, s in results for k in common]
    points = torch.cat(blocks) if blocks else torch.zeros(0, 2)
    proj = pca_2d(points)
    total = float(points.double().var(0).sum()) if len(points) > 1 else 0.0
    share = [float(proj[:, i].var()) / total if total > 0 else 0.0 for i in range(2)]
    # One projection fitted on all checkpoints' points, so the panels share axes.
    parts = iter(proj.split([b.shape[0] for b in blocks]))
    fig = Figure(figsize=(4.2 * len(results) + 1.6, 4.4))
    axes = [fig.add_subplot(1, len(results), i + 1) for i in range(len(results))]
    for ax, (name, stats) in zip(axes, results, strict=True):
        for j, k in enumerate(common):
            pts = next(parts)
            ax.scatter(pts[:, 0], pts[:, 1], s=9, alpha=0.6, color=f"C{j % 10}", label=names[k])
        ax.set_title(_label(name, stats, results))
        ax.set_xlabel(f"PC 1 ({share[0]:.0%} of variance)")
        ax.grid(alpha=0.3)
        if not common:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    if len(proj):
        pad = 0.05 * float((proj.max(0).values - proj.min(0).values).max()) + 1e-6
        for ax in axes:
            ax.set_xlim(float(proj[:, 0].min()) - pad, float(proj[:, 0].max()) + pad)
            ax.set_ylim(float(proj[:, 1].min()) - pad, float(proj[:, 1].max()) + pad)
    axes[0].set_ylabel(f"PC 2 ({share[1]:.0%} of variance)")
    if common:
        axes[-1].legend(
            title="class", loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small"
        )
    fig.suptitle(
        f"Soft labels p ({_temperature(results)}) of {len(common)} "
        f"class{'' if len(common) == 1 else 'es'}, "
        "2-D PCA shared by all checkpoints"
    )
    fig.tight_layout()
    return _save(fig, path)


def write_figures(
    results: list[tuple[str, SoftLabelStats]],
    out_dir: Path,
    class_names: list[str] | None = None,
    pca_classes: int = 5,
) -> list[Path]:
    """Write per_class_diversity.png, ratio.png and pca_softlabels.png for (name, stats) pairs."""
    if not results:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(results[0][1].per_class)
    names = list(class_names) if class_names is not None else [str(k) for k in range(n)]
    if len(names) != n:
        raise IcckdError(f"got {len(names)} class names for {n} classes; pass one name per class.")
    return [
        _per_class(results, names, out_dir / "per_class_diversity.png"),
        _ratio(results, out_dir / "ratio.png"),
        _pca(results, names, pca_classes, out_dir / "pca_softlabels.png"),
    ]


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
    from icckd_cli.base.atomic import atomic_write

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
