"""`icckd plot`: learning curves of several run folders side by side, live runs included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError, UsageError, suggest
from icckd_cli.presentation.run_plots import Curve, write_learning_curves
from icckd_cli.training.rundir import METRICS_FILE, decay_epochs, read_metrics
from icckd_cli.training.tensorboard_log import TAGS

DEFAULT_METRICS = ("train_loss", "top1", "nll")
FORMATS = (".png", ".pdf", ".svg")


def run_labels(runs: list[Path]) -> list[str]:
    """Each run's folder name, with as many parent folders as it takes to tell them apart."""
    parts = [Path(r).resolve().parts for r in runs]
    depth = 1
    while depth < max(len(p) for p in parts):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
        depth += 1
    return ["/".join(p[-depth:]) for p in parts]


def metric_key(name: str) -> str:
    """A metrics.jsonl key from itself or its TensorBoard tag (test/top1 -> top1)."""
    if name.startswith("train/"):
        return "train_" + name[len("train/") :]
    return {tag: key for key, tag in TAGS.items()}.get(name, name)


def load_curves(runs: list[Path]) -> list[Curve]:
    """Every run's records (a partial last line skipped) and lr decay epochs, labelled."""
    return [
        Curve(label, read_metrics(run), decay_epochs(run))
        for run, label in zip(runs, run_labels(runs), strict=True)
    ]


def check_metrics(curves: list[Curve], metrics: list[str]) -> None:
    """Every metric asked for is logged by at least one run; otherwise name those that are."""
    logged = {k for c in curves for r in c.history for k in r if k != "epoch"}
    for metric in metrics:
        if metric not in logged:
            hint = suggest(metric, sorted(logged)) or ""
            raise UsageError(
                f"no run logs the metric '{metric}'.{hint} Choose from: {', '.join(sorted(logged))}"
            )


def plot_runs(runs: list[Path], out: Path, metrics: list[str] | None = None) -> dict[str, Any]:
    """Write the figure; returns what was drawn (figure, metrics, runs with their epochs)."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise UsageError(f"--out {out}: name a .png file (or .pdf, .svg), e.g. --out curves.png")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name a file, e.g. --out {out / 'curves.png'}")
    wanted = [metric_key(m) for m in (metrics or DEFAULT_METRICS)]
    curves = load_curves(runs)
    empty = [str(r) for r, c in zip(runs, curves, strict=True) if not c.history]
    if empty:
        raise UsageError(
            f"{empty[0]}/{METRICS_FILE} holds no finished epoch yet; wait for the first epoch"
        )
    if metrics:
        check_metrics(curves, wanted)
    else:  # a default no run logs is left out quietly
        wanted = [m for m in wanted if any(m in r for c in curves for r in c.history)]
        check_metrics(curves, wanted or list(DEFAULT_METRICS[:1]))
    try:
        write_learning_curves(curves, wanted, out)
    except OSError as exc:
        raise IcckdError(
            f"cannot write {out} ({exc.strerror or exc}); choose a writable --out"
        ) from None
    return {
        "figure": str(out),
        "metrics": wanted,
        "runs": [
            {"run": str(r), "label": c.label, "epochs": len(c.history), "lr_decay": c.decay}
            for r, c in zip(runs, curves, strict=True)
        ],
    }
