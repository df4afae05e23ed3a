"""eval, inspect-softlabels, plot and models: commands that read checkpoints, runs, the zoo."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from icckd_cli.base.torchvision_check import check_torchvision
from icckd_cli.cli.common import (
    DataDir,
    Dataset,
    Device,
    Download,
    Format,
    Opt,
    _collect,
    _format,
    app,
    handle_errors,
)
from icckd_cli.presentation import console, robustness, softlabel_tables, tables
from icckd_cli.settings.config import EvalConfig, InspectConfig, PlotConfig, build


@app.command("eval")
@handle_errors
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors checkpoint.")],
    dataset: Dataset = None,
    data_dir: DataDir = None,
    download: Download = None,
    split: Annotated[
        str | None, Opt(help="test, train or val (the images a run held out).")
    ] = None,
    device: Device = None,
    batch_size: Annotated[
        int | None,
        Opt(help="Evaluation batch size (512), and --latency's throughput batch (64)."),
    ] = None,
    latency: Annotated[
        bool | None,
        Opt("--latency", help="Time batch-1 latency and throughput at batch 64 (--batch-size)."),
    ] = None,
    cost_only: Annotated[
        bool | None,
        Opt("--cost-only", help="Parameters, size, MACs (and --latency) without the data set."),
    ] = None,
    corruptions: Annotated[
        bool | None,
        Opt("--corruptions", help="Top-1 under 10 corruptions x 5 severities (built-in suite)."),
    ] = None,
    corruptions_dir: Annotated[
        Path | None,
        Opt(help="A CIFAR-10-C / CIFAR-100-C folder (<corruption>.npy, labels.npy) instead."),
    ] = None,
    fmt: Format = "table",
) -> None:
    """Evaluate a checkpoint on its data set's test split, with what it costs to run."""
    cfg = build(EvalConfig, {**_collect(locals()), "format": _format(fmt)})
    if cfg.corruptions and cfg.corruptions_dir is None:
        check_torchvision()  # the built-in suite blurs with torchvision: say so before the pass
    from icckd_cli.commands.evaluation import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        cfg.checkpoint,
        cfg.dataset,
        cfg.data_dir,
        cfg.download,
        cfg.split,
        cfg.device,
        cfg.batch_size,
        latency=cfg.latency,
        cost_only=cfg.cost_only,
        corruptions=cfg.corruptions,
        corruptions_dir=cfg.corruptions_dir,
        throughput_batch=batch_size,  # given: the user's; else the work's own default
        progress=_timing_shown(),
    )
    if cfg.format == "json":
        console.print_json(metrics)
    else:
        tables.eval_table(metrics)
        robustness.eval_detail_tables(metrics)


def _timing_shown() -> Callable[[str, dict[str, Any]], None]:
    """`eval --latency`: a line as each timing starts, and a bar of its passes on a terminal."""
    from icckd_cli.presentation.progress import progress_bar

    bars: dict[int, tuple[Any, Any]] = {}

    def shown(event: str, info: dict[str, Any]) -> None:
        if event != "latency":
            return
        batch, done, total = info["batch"], info["done"], info["total"]
        if batch not in bars:
            what = "batch-1 latency" if batch == 1 else f"throughput at batch {batch}"
            console.note(f"timing {what} (at most {total} passes)")
            bar = progress_bar(f"batch {batch}", "passes")
            bar.start()
            bars[batch] = (bar, bar.add_task("timing", total=total))
        bar, task = bars[batch]
        bar.update(task, completed=done, total=total)
        if done >= total:
            bar.stop()

    return shown


@app.command("inspect-softlabels")
@handle_errors
def inspect_softlabels(
    checkpoints: Annotated[list[Path], typer.Argument(help="One or more checkpoints.")],
    split: Annotated[str | None, Opt(help="test or train (never augmented).")] = None,
    temperature: Annotated[
        float | None, Opt(help="Soft-label temperature T (default 4, as KD).")
    ] = None,
    per_class: Annotated[bool | None, Opt("--per-class", help="Add a per-class table.")] = None,
    all_classes: Annotated[
        bool | None, Opt("--all-classes", help="Every class in the per-class table.")
    ] = None,
    plot: Annotated[Path | None, Opt(help="Write PNG figures into this folder.")] = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    download: Download = None,
    device: Device = None,
    batch_size: Annotated[int | None, Opt(help="Evaluation batch size.")] = None,
    fmt: Format = "table",
) -> None:
    """Measure how much intra-class knowledge the soft labels carry, side by side."""
    cfg = build(InspectConfig, {**_collect(locals()), "format": _format(fmt)})
    from icckd_cli.commands.inspect import inspect_checkpoints

    results = inspect_checkpoints(cfg)
    figures = []
    if cfg.plot is not None:
        from icckd_cli.presentation.plots import write_figures

        figures = write_figures(
            [(r.name, r.stats) for r in results], cfg.plot, class_names=results[0].classes
        )
    if cfg.format == "json":
        console.print_json(
            {
                "split": cfg.split,
                "temperature": cfg.temperature,
                "checkpoints": [r.to_dict() for r in results],
                "figures": [str(f) for f in figures],
            }
        )
        return
    softlabel_tables.softlabel_summary(results, cfg.temperature, cfg.split)
    if cfg.per_class or cfg.all_classes:
        softlabel_tables.softlabel_per_class(results, cfg.all_classes)
    for f in figures:
        console.note(f"wrote {f}")


@app.command("plot")
@handle_errors
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (their metrics.jsonl).")],
    out: Annotated[Path, Opt(help="The figure to write, e.g. curves.png.")],
    metric: Annotated[
        list[str] | None,
        Opt(
            help="A metrics.jsonl key or TensorBoard tag, once per panel (default: "
            "train_loss, top1, nll)."
        ),
    ] = None,
    fmt: Format = "table",
) -> None:
    """Learning curves of several runs side by side, one panel per metric."""
    cfg = build(PlotConfig, {"runs": runs, "out": out, "metrics": metric or None})
    from icckd_cli.commands.curves import plot_runs

    drawn = plot_runs(cfg.runs, cfg.out, cfg.metrics)
    if _format(fmt) == "json":
        console.print_json(drawn)
        return
    runs_drawn = ", ".join(f"{r['label']} ({r['epochs']} epochs)" for r in drawn["runs"])
    console.note(f"wrote {drawn['figure']}: {', '.join(drawn['metrics'])} of {runs_drawn}")


@app.command("models")
@handle_errors
def models(
    family: Annotated[
        str | None,
        Opt(help="timm or torchvision: what --arch timm:NAME / torchvision:NAME can name."),
    ] = None,
    filter: Annotated[
        str | None, Opt("--filter", help="Glob over the names, e.g. 'vit_*' or '*convnext*'.")
    ] = None,
    fmt: Format = "table",
) -> None:
    """List the model zoo (or a library's models) with parameter counts at 100 classes."""
    check_torchvision()  # the zoo's tv_ networks are built to count their parameters
    from icckd_cli.base.errors import UsageError
    from icckd_cli.models.registry import COUNT_LIMIT, FAMILIES, describe_family, describe_zoo

    fmt = _format(fmt)
    rows: list[tuple[str, int | None, int | None, int | None]] = []
    if family is not None:
        if family not in FAMILIES:
            raise UsageError(
                f"invalid value for --family ({family!r}): use {' or '.join(FAMILIES)}"
            )
        rows = describe_family(family, filter)
        if not rows:
            raise UsageError(
                f"no {family} model matches --filter {filter!r}; try a wider glob, e.g. "
                f"'*{(filter or '').strip('*')}*'"
            )
    else:
        rows = list(describe_zoo(filter))
    if fmt == "json":
        console.print_json(
            [{"arch": n, "params": p, "feature_dim": d, "input_size": s} for n, p, d, s in rows]
        )
        return
    tables.models_table(rows, f"{family} models" if family else "model zoo")
    if family is not None and len(rows) > COUNT_LIMIT:
        console.note(
            f"{len(rows)} models: sizes are shown for {COUNT_LIMIT} or fewer; narrow the list "
            "with --filter, e.g. --filter 'vit_*'"
        )
