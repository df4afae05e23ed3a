"""train-teacher and distill: one body, two validated configs."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from icckd_cli.base.errors import INTERRUPTED
from icckd_cli.cli.common import (
    Arch,
    BatchSize,
    Compile,
    ConfigFile,
    DataDir,
    DataSeed,
    Dataset,
    Decay,
    Device,
    Download,
    Epochs,
    EvalEvery,
    Flip,
    Format,
    ImageSize,
    ImbalanceFactor,
    Lr,
    MemoryLimit,
    ModelArg,
    Momentum,
    Opt,
    Optimizer,
    Out,
    Overwrite,
    Precision,
    Resume,
    SaveEvery,
    Schedule,
    Seed,
    SyncBN,
    Tensorboard,
    TestPC,
    TrainPC,
    ValFraction,
    ValPC,
    Warmup,
    Wd,
    Workers,
    _collect,
    _format,
    app,
    handle_errors,
    resume_config,
    teacher_defaults,
)
from icckd_cli.methods import registry
from icckd_cli.presentation import console, progress, tables
from icckd_cli.settings.config import DistillConfig, TrainTeacherConfig, build, option_name

_CHOICES = ", ".join(registry.choices()[:-1]) + " or " + registry.choices()[-1]
_NAMES = ", ".join(m.name.upper() for m in registry.methods())
KEYWORD = inspect.Parameter.POSITIONAL_OR_KEYWORD


def _train(kind: str, model: type, local: dict[str, Any]) -> None:
    """Shared body of train-teacher and distill."""
    from icckd_cli.commands import runs
    from icckd_cli.training import distributed as dist
    from icckd_cli.training.engine import Interrupted

    run = runs.train_teacher if kind == "teacher" else runs.distill
    fmt = _format(local["fmt"])
    given = _collect(local)
    resume = local.get("resume")
    below = teacher_defaults if kind == "student" else None
    cfg = (
        resume_config(model, resume, given)
        if resume
        else build(model, given, local["config"], below)
    )
    dist.init_from_env()
    view = progress.TrainingProgress(f"{kind} {cfg.arch}", quiet=not dist.is_main())
    try:
        result = run(cfg, view, resume=bool(resume))
    except Interrupted:
        view.close()
        console.note(
            f"interrupted: state saved in {cfg.out}; continue with "
            f"icckd {'train-teacher' if kind == 'teacher' else 'distill'} --resume {cfg.out}"
        )
        raise typer.Exit(INTERRUPTED) from None
    finally:
        view.close()
    if not dist.is_main():
        return
    if fmt == "json":
        console.print_json(
            {
                "checkpoint": str(result.checkpoint),
                **result.final,
                "best": result.best,
                **({"validation": result.validation} if result.validation else {}),
                "params": result.params,
                "elapsed_s": result.elapsed,
                "recipe": view.recipe,
            }
        )
    else:
        tables.run_summary(kind, result)


@app.command("train-teacher")
@handle_errors
def train_teacher(
    config: ConfigFile = None,
    arch: Arch = None,
    model_arg: ModelArg = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    download: Download = None,
    flip: Flip = None,
    train_per_class: TrainPC = None,
    test_per_class: TestPC = None,
    val_per_class: ValPC = None,
    val_fraction: ValFraction = None,
    imbalance_factor: ImbalanceFactor = None,
    image_size: ImageSize = None,
    workers: Workers = None,
    memory_limit_gb: MemoryLimit = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    optimizer: Optimizer = None,
    lr: Lr = None,
    lr_decay_epochs: Decay = None,
    momentum: Momentum = None,
    weight_decay: Wd = None,
    schedule: Schedule = None,
    warmup_epochs: Warmup = None,
    seed: Seed = None,
    data_seed: DataSeed = None,
    device: Device = None,
    out: Out = None,
    overwrite: Overwrite = None,
    save_every: SaveEvery = None,
    eval_every: EvalEvery = None,
    resume: Resume = None,
    compile: Compile = None,
    precision: Precision = None,
    sync_bn: SyncBN = None,
    tensorboard: Tensorboard = None,
    icc_weight: Annotated[
        float | None, Opt(help="lambda of L_intra (0: plain cross-entropy teacher).")
    ] = None,
    label_smoothing: Annotated[
        float | None, Opt(help="Smoothed CE targets, eps in [0, 1) (0: off).")
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


def distill(
    config: ConfigFile = None,
    teacher: Annotated[
        Path | None, Opt(help="Teacher checkpoint (.safetensors, or a CRD-zoo .pth).")
    ] = None,
    teacher_arch: Annotated[
        str | None, Opt(help="Architecture of a weights-file teacher (ours record it).")
    ] = None,
    teacher_model_arg: Annotated[
        list[str] | None,
        Opt(
            "--teacher-model-arg",
            help="Builder argument KEY=VALUE of a weights-file teacher, repeatable "
            "(ours record theirs).",
        ),
    ] = None,
    arch: Arch = None,
    model_arg: ModelArg = None,
    method: Annotated[str | None, Opt(help=f"{_CHOICES}: the published weights.")] = None,
    weights: Annotated[
        str | None, Opt(help="CE/KD weights: crd (0.1/0.9) or mdistiller (1/1).")
    ] = None,
    ce_weight: Annotated[float | None, Opt(help="Cross-entropy weight.")] = None,
    teacher_cache: Annotated[
        Path | None,
        Opt(help="Teacher-output store: written once, then read instead of running the teacher."),
    ] = None,
    teacher_cache_dtype: Annotated[
        str | None, Opt(help="float16 (default) or float32 (the same student bit for bit).")
    ] = None,
    teacher_cache_topk: Annotated[
        int | None, Opt(help="Keep K logits a row; the rest share the remaining mass evenly.")
    ] = None,
    teacher_cache_limit_gb: Annotated[
        float | None, Opt(help="Refuse a teacher cache bigger than this (32 GB).")
    ] = None,
    dataset: Annotated[
        str | None, Opt(help="Data set (default: the one recorded in --teacher, else cifar100).")
    ] = None,
    data_dir: DataDir = None,
    download: Download = None,
    flip: Flip = None,
    train_per_class: TrainPC = None,
    test_per_class: TestPC = None,
    val_per_class: ValPC = None,
    val_fraction: ValFraction = None,
    imbalance_factor: ImbalanceFactor = None,
    labels_per_class: Annotated[
        int | None, Opt(help="Keep the labels of the first N training images per class only.")
    ] = None,
    unlabeled_dir: Annotated[
        Path | None, Opt(help="Extra training images without labels (any folder of images).")
    ] = None,
    unlabeled_ratio: Annotated[
        float | None, Opt(help="Share of unlabelled images per batch (default: shuffle all).")
    ] = None,
    mixup: Annotated[
        float | None, Opt(help="Mixup Beta(A, A) per batch, one view for teacher and student.")
    ] = None,
    image_size: ImageSize = None,
    workers: Workers = None,
    memory_limit_gb: MemoryLimit = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    optimizer: Optimizer = None,
    lr: Lr = None,
    lr_decay_epochs: Decay = None,
    momentum: Momentum = None,
    weight_decay: Wd = None,
    schedule: Schedule = None,
    warmup_epochs: Warmup = None,
    seed: Seed = None,
    data_seed: DataSeed = None,
    device: Device = None,
    out: Out = None,
    overwrite: Overwrite = None,
    save_every: SaveEvery = None,
    eval_every: EvalEvery = None,
    resume: Resume = None,
    compile: Compile = None,
    precision: Precision = None,
    sync_bn: SyncBN = None,
    tensorboard: Tensorboard = None,
    fmt: Format = "table",
    **methods: Any,
) -> None:
    given = dict(locals())
    given.update(given.pop("methods"))  # the methods' options (_method_options)
    _train("student", DistillConfig, given)


def _method_options() -> list[inspect.Parameter]:
    """A `distill` option for each method setting with a description (the rest: TOML only)."""
    params: list[inspect.Parameter] = []
    for method in registry.methods():
        for name, field in method.settings.model_fields.items():
            if not field.description or name in {p.name for p in params}:
                continue  # a TOML key only, or a field two methods share: one option
            kinds = get_args(field.annotation) or (field.annotation,)
            kind = next(a for a in kinds if a is not type(None))
            flag = (option_name(name),) if kind is bool else ()  # a flag: given means on
            opt = Opt(*flag, help=field.description)
            annotation = Annotated[kind | None, opt]  # type: ignore[operator,valid-type]
            params.append(inspect.Parameter(name, KEYWORD, default=None, annotation=annotation))
    return params


# the methods' options stand after --ce-weight, in method order
_params = list(inspect.signature(distill, eval_str=True).parameters.values())[:-1]  # no **
_at = [p.name for p in _params].index("ce_weight") + 1
_params[_at:_at] = _method_options()
distill.__signature__ = inspect.Signature(_params)  # type: ignore[attr-defined]
distill.__doc__ = f"Distill a student from a frozen teacher ({_NAMES}, combined)."
app.command()(handle_errors(distill))
