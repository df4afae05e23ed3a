"""What every command shares: the Typer app, the option types, error handling."""

from __future__ import annotations

import ast
import functools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from icckd_cli import __version__
from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.presentation import console
from icckd_cli.settings.config import (
    RECORDED_ONLY,
    RunSettings,
    build,
    option_name,
    teacher_data,
)

# Typer's rich option tables cut long option names in a narrow terminal (`--logit-standardi…`
# at 80 columns; none at 90 or more); narrower than WIDE_HELP, click's plain layout is used,
# which wraps the help text and never a name (tests/test_cli.py renders both at 80 and 100).
WIDE_HELP = 100

app = typer.Typer(
    help="Intra-class contrastive teachers and knowledge distillation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich" if shutil.get_terminal_size().columns >= WIDE_HELP else None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R", bound=RunSettings)


def _show_version(value: bool) -> None:
    if value:
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


# ----------------------------------------------------------------------------- options
# Every option defaults to None ("not given") so the config file and defaults can fill in.

Opt = typer.Option
ConfigFile = Annotated[Path | None, Opt("--config", help="TOML file of settings.")]
Arch = Annotated[
    str | None,
    Opt(help="Architecture: a zoo name, timm:<model> or torchvision:<builder> ('icckd models')."),
]
ModelArg = Annotated[
    list[str] | None,
    Opt(
        "--model-arg",
        help="Builder argument KEY=VALUE of a timm:/torchvision: arch, repeatable "
        "(img_size defaults to the data set's).",
    ),
]
Dataset = Annotated[
    str | None,
    Opt(help="digits, cifar10, cifar100, imagefolder, tinyimagenet or imagenet (streamed)."),
]
DataDir = Annotated[Path | None, Opt(help="Folder of the data set's files.")]
Download = Annotated[
    bool | None, Opt("--download/--no-download", help="Allow torchvision downloads.")
]
Flip = Annotated[
    bool | None, Opt("--flip/--no-flip", help="Horizontal flips (default: per data set).")
]
TrainPC = Annotated[int | None, Opt(help="Keep the first N training images per class.")]
TestPC = Annotated[int | None, Opt(help="Keep the first N test images per class.")]
ValPC = Annotated[
    int | None,
    Opt(help="Hold out N training images per class for validation; best epoch is chosen there."),
]
ValFraction = Annotated[
    float | None, Opt(help="Hold out this fraction (0-1) of each class instead of N.")
]
ImbalanceFactor = Annotated[
    float | None,
    Opt(help="Long-tailed training split: class i keeps n_max * F^(-i/(C-1)) images (1: off)."),
]
ImageSize = Annotated[
    int | None, Opt(help="imagenet: crop size in pixels (224; evaluation resizes to /0.875).")
]
Workers = Annotated[int | None, Opt(help="imagenet: decoding processes (default: the cores).")]
MemoryLimit = Annotated[
    float | None, Opt(help="imagefolder: most GB decoded images may take in memory (16).")
]
Epochs = Annotated[int | None, Opt(help="Epochs (recipe: 240; imagenet 100).")]
BatchSize = Annotated[int | None, Opt(help="Batch size per process (recipe: 64; imagenet 256).")]
Optimizer = Annotated[
    str | None, Opt(help="sgd or adamw (recipe: adamw for vision Transformers, else sgd).")
]
Lr = Annotated[
    float | None,
    Opt(
        help="Learning rate (recipe: 0.05; 0.01 MobileNet/Shuffle; imagenet 0.1 x batch/256; "
        "Transformers 5e-4 x batch/512)."
    ),
]
Decay = Annotated[
    str | None, Opt(help="Decay epochs, e.g. 150,180,210 (default: scaled to --epochs).")
]
Momentum = Annotated[float | None, Opt(help="SGD momentum (0.9).")]
Wd = Annotated[float | None, Opt(help="Weight decay (5e-4; imagenet 1e-4; Transformers 0.05).")]
Schedule = Annotated[
    str | None, Opt(help="step or cosine (recipe: cosine for vision Transformers, else step).")
]
Warmup = Annotated[
    int | None,
    Opt(help="Linear warm-up epochs (recipe: 0; Transformers 5/300 of --epochs, at least 1)."),
]
Seed = Annotated[
    int | None,
    Opt(
        help="Random seed: initialisation, and the data too unless --data-seed (CPU: bit for bit)."
    ),
]
DataSeed = Annotated[int | None, Opt(help="Seed of data order, crops and flips (default: --seed).")]
Device = Annotated[str | None, Opt(help="auto, cpu, cuda, cuda:N or mps.")]
Out = Annotated[Path | None, Opt(help="Run folder: model, metrics log, config.")]
Overwrite = Annotated[bool | None, Opt("--overwrite", help="Replace a finished run in --out.")]
SaveEvery = Annotated[int | None, Opt(help="Save resumable state every N epochs (0: never).")]
EvalEvery = Annotated[
    int | None, Opt(help="Evaluate on the test split every N epochs (the last always).")
]
Resume = Annotated[Path | None, Opt(help="Continue the interrupted run in this folder.")]
Compile = Annotated[bool | None, Opt("--compile/--no-compile", help="Use torch.compile.")]
Precision = Annotated[str | None, Opt(help="auto (bf16 on CUDA), fp32, bf16 or fp16.")]
Tensorboard = Annotated[
    bool | None,
    Opt(
        "--tensorboard/--no-tensorboard",
        help="TensorBoard event files in OUT/tensorboard/ (default: on if installed).",
    ),
]
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


def _literal(raw: str) -> Any:
    """A --model-arg value: a number, true/false (or True/False), None, a list, else a string."""
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return raw  # a bare word: drop_path="foo" and drop_path=foo mean the same
    if isinstance(value, tuple):
        value = list(value)
    return value if isinstance(value, (int, float, str, list)) else raw


def _model_args(items: list[str], option: str) -> dict[str, Any]:
    """KEY=VALUE items of a repeatable option as a dict (a later KEY wins)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"invalid value for {option} ({item!r}): give KEY=VALUE, e.g. "
                f"{option} drop_path_rate=0.1"
            )
        out[key.strip()] = _literal(raw.strip())
    return out


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
    for option in ("model_arg", "teacher_model_arg"):
        items = values.pop(option, None)
        if items:
            values[f"{option}s"] = _model_args(items, "--" + option.replace("_", "-"))
    return values


def _reports(exc: BaseException) -> bool:
    """Under torchrun only rank 0 prints an error every rank hit; a rank's own failure prints."""
    if "LOCAL_RANK" not in os.environ or os.environ.get("RANK", "0") == "0":
        return True  # the common case decides without importing torch
    from icckd_cli.training.distributed import reports

    return reports(exc)


def show_error(exc: IcckdError) -> int:
    """A user error as its one line on stderr (once under torchrun); returns its exit code."""
    if _reports(exc):
        console.error(exc.message)
    return exc.exit_code


def handle_errors(fn: F) -> F:
    """Turn a user error into one line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IcckdError as exc:
            raise typer.Exit(show_error(exc)) from None

    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------- a run's settings


def teacher_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """distill without --dataset: the data set (and folder) its teacher was trained on."""
    return {} if values.get("dataset") is not None else teacher_data(values.get("teacher"))


def resume_config(model: type[R], resume: Path, given: dict[str, Any]) -> R:
    """The saved settings of an interrupted run, read back into their type; only --device and
    --tensorboard may change. config.json holds the resolved values (lr, decay epochs, ...),
    so they read back as given and resolve to themselves."""
    from icckd_cli.training.rundir import CONFIG_FILE

    path = Path(resume) / CONFIG_FILE
    if not path.is_file():
        raise UsageError(f"{resume} holds no {CONFIG_FILE}; it is not an icckd run folder")
    extra = sorted(k for k in given if k not in ("device", "tensorboard"))
    if extra:
        raise UsageError(
            f"--resume continues the saved settings of {resume}; drop {option_name(extra[0])} "
            "(only --device and --tensorboard may change)"
        )
    try:
        saved = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        saved = None
    if not isinstance(saved, dict):
        raise UsageError(
            f"{path} is damaged (no JSON object of settings); start the run afresh with --overwrite"
        )
    for key in RECORDED_ONLY:  # derived when the run started, no setting
        saved.pop(key, None)
    unknown = sorted(k for k in saved if k not in model.model_fields)
    if unknown:
        raise UsageError(
            f"{path} holds '{unknown[0]}', a setting this version of icckd does not know (the "
            "run was started by another version); resume it with that version, or start it "
            "afresh with --overwrite"
        )
    saved.update({"out": str(resume)})
    saved.update({k: given[k] for k in ("device", "tensorboard") if given.get(k) is not None})
    cfg: R = build(model, saved)
    return cfg
