"""The Typer app: thin commands that build a config, call the engine, render."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from icckd_cli import report
from icckd_cli.config import (
    DistillConfig,
    EvalConfig,
    InspectConfig,
    TrainTeacherConfig,
    build,
    option_name,
)
from icckd_cli.errors import USAGE, IcckdError, UsageError

app = typer.Typer(
    help="Intra-class contrastive teachers and knowledge distillation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


def _show_version(value: bool) -> None:
    if value:
        from icckd_cli import __version__

        print(f"icckd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Intra-class contrastive teachers and knowledge distillation."""


INTERRUPTED = 130

# ----------------------------------------------------------------------------- options
# Every option defaults to None ("not given") so the config file and defaults can fill in.

Opt = typer.Option
ConfigFile = Annotated[Path | None, Opt("--config", help="TOML file of settings.")]
Arch = Annotated[str | None, Opt(help="Architecture (see 'icckd models').")]
Dataset = Annotated[str | None, Opt(help="digits, cifar10, cifar100 or imagefolder.")]
DataDir = Annotated[Path | None, Opt(help="Folder of the data set's files.")]
Download = Annotated[
    bool | None, Opt("--download/--no-download", help="Allow torchvision downloads.")
]
Flip = Annotated[
    bool | None, Opt("--flip/--no-flip", help="Horizontal flips (default: per data set).")
]
TrainPC = Annotated[int | None, Opt(help="Keep the first N training images per class.")]
TestPC = Annotated[int | None, Opt(help="Keep the first N test images per class.")]
Epochs = Annotated[int | None, Opt(help="Epochs (recipe: 240).")]
BatchSize = Annotated[int | None, Opt(help="Batch size per process (recipe: 64).")]
Lr = Annotated[float | None, Opt(help="Learning rate (recipe: 0.05; 0.01 MobileNet/Shuffle).")]
Decay = Annotated[
    str | None, Opt(help="Decay epochs, e.g. 150,180,210 (default: scaled to --epochs).")
]
Momentum = Annotated[float | None, Opt(help="SGD momentum (0.9).")]
Wd = Annotated[float | None, Opt(help="Weight decay (5e-4).")]
Seed = Annotated[int | None, Opt(help="Random seed (CPU runs repeat bit for bit).")]
Device = Annotated[str | None, Opt(help="auto, cpu, cuda, cuda:N or mps.")]
Out = Annotated[Path | None, Opt(help="Run folder: model, metrics log, config.")]
Overwrite = Annotated[bool | None, Opt("--overwrite", help="Replace a finished run in --out.")]
SaveEvery = Annotated[int | None, Opt(help="Save resumable state every N epochs (0: never).")]
Resume = Annotated[Path | None, Opt(help="Continue the interrupted run in this folder.")]
Compile = Annotated[bool | None, Opt("--compile/--no-compile", help="Use torch.compile.")]
Precision = Annotated[str | None, Opt(help="auto (bf16 on CUDA), fp32, bf16 or fp16.")]
SyncBN = Annotated[bool | None, Opt("--sync-bn", help="Synchronised batch norm (torchrun).")]
Format = Annotated[str, Opt("--format", help="table or json.")]


def _decay(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise UsageError(
            f"invalid value for --lr-decay-epochs ({value!r}): give whole epochs separated by "
            "commas, e.g. 150,180,210"
        ) from None


def _format(value: str) -> str:
    if value not in ("table", "json"):
        raise UsageError(f"invalid value for --format ({value!r}): use table or json")
    return value


def _collect(local: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The options a user gave, as config fields."""
    skip = {"config", "fmt", "resume", *drop}
    values = {k: v for k, v in local.items() if k not in skip and v is not None}
    if "lr_decay_epochs" in values:
        values["lr_decay_epochs"] = _decay(values["lr_decay_epochs"])
    return values


def _reports(exc: BaseException) -> bool:
    """Under torchrun only rank 0 prints an error every rank hit; a rank's own failure prints."""
    if "LOCAL_RANK" not in os.environ or os.environ.get("RANK", "0") == "0":
        return True  # the common case decides without importing torch
    from icckd_cli.distributed import reports

    return reports(exc)


def handle_errors(fn: F) -> F:
    """Turn a user error into one line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IcckdError as exc:
            if _reports(exc):
                report.error(exc.message)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _resume_config(model: type, resume: Path, given: dict[str, Any]) -> Any:
    """The saved config of an interrupted run; only --device may change."""
    from icckd_cli.rundir import CONFIG_FILE

    path = Path(resume) / CONFIG_FILE
    if not path.is_file():
        raise UsageError(f"{resume} holds no {CONFIG_FILE}; it is not an icckd run folder")
    extra = sorted(k for k in given if k != "device")
    if extra:
        raise UsageError(
            f"--resume continues the saved settings of {resume}; drop {option_name(extra[0])} "
            "(only --device may change)"
        )
    saved = json.loads(path.read_text())
    saved.update({"out": str(resume)})
    if given.get("device"):
        saved["device"] = given["device"]
    return build(model, saved)


def _train(kind: str, model: type, local: dict[str, Any]) -> None:
    """Shared body of train-teacher and distill."""
    from icckd_cli import distributed as dist
    from icckd_cli import runs
    from icckd_cli.engine import Interrupted

    run = runs.train_teacher if kind == "teacher" else runs.distill
    fmt = _format(local["fmt"])
    given = _collect(local)
    resume = local.get("resume")
    cfg = _resume_config(model, resume, given) if resume else build(model, given, local["config"])
    dist.init_from_env()
    progress = report.TrainingProgress(f"{kind} {cfg.arch}", quiet=not dist.is_main())
    try:
        result = run(cfg, progress, resume=bool(resume))
    except Interrupted:
        progress.close()
        report.note(
            f"interrupted: state saved in {cfg.out}; continue with "
            f"icckd {'train-teacher' if kind == 'teacher' else 'distill'} --resume {cfg.out}"
        )
        raise typer.Exit(INTERRUPTED) from None
    finally:
        progress.close()
    if not dist.is_main():
        return
    if fmt == "json":
        report.print_json(
            {
                "checkpoint": str(result.checkpoint),
                **result.final,
                "best": result.best,
                "params": result.params,
                "elapsed_s": result.elapsed,
            }
        )
    else:
        report.run_summary(kind, result)


@app.command("train-teacher")
@handle_errors
def train_teacher(
    config: ConfigFile = None,
    arch: Arch = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    download: Download = None,
    flip: Flip = None,
    train_per_class: TrainPC = None,
    test_per_class: TestPC = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    lr_decay_epochs: Decay = None,
    momentum: Momentum = None,
    weight_decay: Wd = None,
    seed: Seed = None,
    device: Device = None,
    out: Out = None,
    overwrite: Overwrite = None,
    save_every: SaveEvery = None,
    resume: Resume = None,
    compile: Compile = None,
    precision: Precision = None,
    sync_bn: SyncBN = None,
    icc_weight: Annotated[
        float | None, Opt(help="lambda of L_intra (0: plain cross-entropy teacher).")
    ] = None,
    margin: Annotated[
        float | None, Opt(help="Gate delta: anchors need margin > delta (<= -1: no gate).")
    ] = None,
    icc_temperature: Annotated[float | None, Opt(help="tau of the intra-class loss.")] = None,
    queue_size: Annotated[
        int | None, Opt(help="Cached embeddings per class (0: in-batch only).")
    ] = None,
    embedding: Annotated[
        str | None, Opt(help="features, logits or projection (a head not saved).")
    ] = None,
    init: Annotated[
        Path | None, Opt(help="Start from these weights (.safetensors or CRD .pth).")
    ] = None,
    fmt: Format = "table",
) -> None:
    """Train a teacher: cross-entropy plus the intra-class contrastive term."""
    _train("teacher", TrainTeacherConfig, locals())


@app.command()
@handle_errors
def distill(
    config: ConfigFile = None,
    teacher: Annotated[
        Path | None, Opt(help="Teacher checkpoint (.safetensors, or a CRD-zoo .pth).")
    ] = None,
    teacher_arch: Annotated[
        str | None, Opt(help="Architecture of a .pth teacher (ours record it).")
    ] = None,
    arch: Arch = None,
    method: Annotated[
        str | None, Opt(help="kd, rkd, kd+rkd, dkd or crd: the published weights.")
    ] = None,
    weights: Annotated[
        str | None, Opt(help="CE/KD weights: crd (0.1/0.9) or mdistiller (1/1).")
    ] = None,
    ce_weight: Annotated[float | None, Opt(help="Cross-entropy weight.")] = None,
    kd_weight: Annotated[float | None, Opt(help="Hinton KD weight.")] = None,
    kd_temperature: Annotated[float | None, Opt(help="KD temperature T.")] = None,
    rkd_weight: Annotated[float | None, Opt(help="RKD weight (distance 25, angle 50).")] = None,
    dkd_weight: Annotated[float | None, Opt(help="DKD weight.")] = None,
    dkd_alpha: Annotated[float | None, Opt(help="DKD target-class weight.")] = None,
    dkd_beta: Annotated[float | None, Opt(help="DKD non-target weight.")] = None,
    dkd_temperature: Annotated[float | None, Opt(help="DKD temperature.")] = None,
    dkd_warmup: Annotated[int | None, Opt(help="DKD warm-up epochs.")] = None,
    crd_weight: Annotated[float | None, Opt(help="CRD weight.")] = None,
    crd_feat_dim: Annotated[int | None, Opt(help="CRD embedding size.")] = None,
    crd_nce_k: Annotated[int | None, Opt(help="CRD negatives per anchor.")] = None,
    crd_temperature: Annotated[float | None, Opt(help="CRD temperature.")] = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    download: Download = None,
    flip: Flip = None,
    train_per_class: TrainPC = None,
    test_per_class: TestPC = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    lr_decay_epochs: Decay = None,
    momentum: Momentum = None,
    weight_decay: Wd = None,
    seed: Seed = None,
    device: Device = None,
    out: Out = None,
    overwrite: Overwrite = None,
    save_every: SaveEvery = None,
    resume: Resume = None,
    compile: Compile = None,
    precision: Precision = None,
    sync_bn: SyncBN = None,
    fmt: Format = "table",
) -> None:
    """Distill a student from a frozen teacher (KD, RKD, DKD, CRD, combined)."""
    _train("student", DistillConfig, locals())


@app.command("eval")
@handle_errors
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors checkpoint.")],
    dataset: Dataset = None,
    data_dir: DataDir = None,
    download: Download = None,
    split: Annotated[str | None, Opt(help="test or train.")] = None,
    device: Device = None,
    batch_size: Annotated[int | None, Opt(help="Evaluation batch size.")] = None,
    fmt: Format = "table",
) -> None:
    """Evaluate a checkpoint on its data set's test split."""
    cfg = build(EvalConfig, {**_collect(locals()), "format": _format(fmt)})
    from icckd_cli.evaluation import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        cfg.checkpoint,
        cfg.dataset,
        cfg.data_dir,
        cfg.download,
        cfg.split,
        cfg.device,
        cfg.batch_size,
    )
    if cfg.format == "json":
        report.print_json(metrics)
    else:
        report.eval_table(metrics)


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
    from icckd_cli.inspect import inspect_checkpoints

    results = inspect_checkpoints(cfg)
    figures = []
    if cfg.plot is not None:
        from icckd_cli.plots import write_figures

        figures = write_figures(
            [(r.name, r.stats) for r in results], cfg.plot, class_names=results[0].classes
        )
    if cfg.format == "json":
        report.print_json(
            {
                "split": cfg.split,
                "temperature": cfg.temperature,
                "checkpoints": [r.to_dict() for r in results],
                "figures": [str(f) for f in figures],
            }
        )
        return
    report.softlabel_summary(results, cfg.temperature, cfg.split)
    if cfg.per_class or cfg.all_classes:
        report.softlabel_per_class(results, cfg.all_classes)
    for f in figures:
        report.note(f"wrote {f}")


@app.command("models")
@handle_errors
def models(fmt: Format = "table") -> None:
    """List the model zoo with parameter counts at 100 classes."""
    from icckd_cli.models import create_model, list_models

    rows = []
    for name in list_models():
        m = create_model(name, 100)
        rows.append((name, sum(p.numel() for p in m.parameters()), m.feature_dim))
    if _format(fmt) == "json":
        report.print_json([{"arch": n, "params": p, "feature_dim": d} for n, p, d in rows])
    else:
        report.models_table(rows)


# ----------------------------------------------------------------------------- experiment


def _experiment(exp: Any, fmt: str, dry_run: bool = False) -> None:
    """Shared body of experiment and quickstart: run the matrix, render the table."""
    from icckd_cli import distributed as dist
    from icckd_cli import experiment as ex
    from icckd_cli.engine import Interrupted

    if dry_run:
        report.experiment_plan([(r.label, r.status()) for r in exp.runs])
        return
    dist.init_from_env()  # under torchrun every run of the matrix is data-parallel
    progress = report.ExperimentProgress(exp.options.name)
    quiet = not dist.is_main()
    try:
        results = ex.run_experiment(exp, (lambda event, info: None) if quiet else progress)
    except Interrupted:
        progress.close()
        if quiet:
            raise typer.Exit(INTERRUPTED) from None
        report.note(
            "interrupted: finished runs are kept and the current one saved its state; run the "
            "same command again to continue"
        )
        raise typer.Exit(INTERRUPTED) from None
    finally:
        progress.close()
    if quiet:
        return
    if fmt == "json":
        report.print_json(results)
        return
    written = [str(Path(exp.options.out) / f) for f in ("results.json", "results.md")]
    report.experiment_tables(ex.result_tables(results), written)


@app.command()
@handle_errors
def experiment(
    config: Annotated[Path, typer.Argument(help="Experiment TOML file (see examples/).")],
    out: Annotated[Path | None, Opt(help="Experiment folder (default: out in the file).")] = None,
    device: Device = None,
    dry_run: Annotated[
        bool, Opt("--dry-run", help="List the runs and which are done; train nothing.")
    ] = False,
    fmt: Format = "table",
) -> None:
    """Teachers x student methods x seeds in one resumable command, with one table."""
    from icckd_cli.experiment import load_experiment

    fmt = _format(fmt)
    _experiment(load_experiment(config, {"out": out, "device": device}), fmt, dry_run)


@app.command()
@handle_errors
def quickstart(
    out: Annotated[Path | None, Opt(help="Experiment folder.")] = Path("icckd-quickstart"),
    device: Device = None,
    fmt: Format = "table",
) -> None:
    """The built-in experiment on digits: CE vs intra-class teacher, KD students, 2 seeds."""
    from icckd_cli.experiment import quickstart_experiment

    fmt = _format(fmt)
    _experiment(quickstart_experiment({"out": out, "device": device}), fmt)


def main() -> None:
    """Console entry point: one-line errors, documented exit codes, no tracebacks."""
    try:
        code = app(standalone_mode=False)
    except IcckdError as exc:
        if _reports(exc):
            report.error(exc.message)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        report.error("interrupted")
        sys.exit(INTERRUPTED)
    except Exception as exc:
        # click's (or Typer's vendored click's) usage errors: bad option, missing argument
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            if _reports(exc):
                report.error(f"{exc.format_message()} (see 'icckd --help')")
            sys.exit(USAGE)
        if type(exc).__name__ == "Abort":
            report.error("aborted")
            sys.exit(INTERRUPTED)
        raise
    sys.exit(code if isinstance(code, int) else 0)
