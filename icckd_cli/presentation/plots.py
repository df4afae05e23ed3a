"""The figures of `inspect-softlabels --plot`: soft-label diversity of checkpoints side by side.

The figures of runs (learning curves, accuracy against latency) are in run_plots.py.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
