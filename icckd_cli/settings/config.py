"""Pydantic settings, one model per command; every default lives here.

Precedence: command line > `--config FILE.toml` > the defaults below. Models are flat so a
TOML file uses the same names as the options (`icc_weight = 0.1` for `--icc-weight 0.1`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from icckd_cli.base.errors import UsageError, suggest
from icckd_cli.settings.recipes import RECIPE_EPOCHS, Choice, choose, recipe_defaults, step_recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def teacher_data(teacher: Any) -> dict[str, Any]:
    """The data set (and its folder) recorded in an icckd teacher checkpoint; {} if none."""
    if teacher is None or Path(teacher).suffix in (".pth", ".pt"):
        return {}
    from icckd_cli.base.checkpoint import read_metadata
    from icckd_cli.base.errors import IcckdError

    try:
        recorded = read_metadata(Path(teacher)).get("dataset") or {}
    except IcckdError:  # a bad teacher file gets its own error when the teacher loads
        return {}
    out = {"dataset": recorded["name"]} if recorded.get("name") else {}
    if out and recorded.get("data_dir"):
        out["data_dir"] = recorded["data_dir"]
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# builder arguments icckd sets itself: classes from the data set, weights from files only
RESERVED_MODEL_ARGS = {
    "num_classes": "the data set sets the number of classes",
    "pretrained": "icckd never downloads weights while building: use fetch-teacher or --init",
    "weights": "icckd never downloads weights while building: use fetch-teacher or --init",
}


def check_model_args(args: dict[str, Any], option: str) -> dict[str, Any]:
    """Builder arguments: identifier keys, scalar (or list) values, nothing icckd sets."""
    for key, value in args.items():
        if not key.isidentifier():
            raise ValueError(
                f"invalid value for {option} ({key!r}): give KEY=VALUE with a Python name as "
                f"KEY, e.g. {option} drop_path_rate=0.1"
            )
        if key in RESERVED_MODEL_ARGS:
            raise ValueError(
                f"invalid value for {option} ({key}={value!r}): {RESERVED_MODEL_ARGS[key]}"
            )
        items = value if isinstance(value, list) else [value]
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in items):
            raise ValueError(
                f"invalid value for {option} ({key}={value!r}): give a number, true/false, a "
                "string or a list of those"
            )
    return args


class DataOptions(_Strict):
    """Which data set, where, and how it is augmented."""

    dataset: str = "cifar100"
    data_dir: Path | None = None
    download: bool = True
    flip: bool | None = None  # None: the data set's own default (off for digits)
    crop_padding: int = Field(4, ge=0, le=32)
    train_per_class: int | None = Field(None, ge=1)
    test_per_class: int | None = Field(None, ge=1)
    # a validation split held out of the training images (one of the two; None: none). The
    # images are fixed per data set (data/registry.py split_class), whatever --seed is
    val_per_class: int | None = Field(None, ge=1)
    val_fraction: float | None = Field(None, gt=0, lt=1)
    image_size: int = Field(224, ge=16, le=1024)  # streamed sets (imagenet): crop size
    workers: int | None = Field(None, ge=0)  # streamed decoding; None: the cores (0: inline)
    memory_limit_gb: float = Field(16.0, gt=0)  # imagefolder: decoded size allowed in memory

    @model_validator(mode="before")
    @classmethod
    def _data_set_defaults(cls, data: Any) -> Any:
        """Precedence: given > the teacher's recorded data set (distill) > data set recipe."""
        if not isinstance(data, dict):
            return data
        if "teacher" in cls.model_fields and data.get("dataset") is None:
            recorded = teacher_data(data.get("teacher"))
            given = {k: v for k, v in data.items() if v is not None}
            data = {**recorded, **given}
        fields = cls.model_fields
        arch = (data.get("arch") or fields["arch"].default) if "arch" in fields else None
        defaults = recipe_defaults(data.get("dataset"), fields, data.get("method"), arch, data)
        return {**defaults, **data}

    @model_validator(mode="after")
    def _one_validation_rule(self) -> DataOptions:
        if self.val_per_class is not None and self.val_fraction is not None:
            raise ValueError(
                f"invalid value for --val-fraction ({self.val_fraction:g}): --val-per-class "
                f"({self.val_per_class}) is given too; hold out by one of the two"
            )
        return self


class OptimOptions(_Strict):
    """Optimiser and schedule; the recipe (recipes.py) fills in what is not given."""

    epochs: int = Field(RECIPE_EPOCHS, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # the recipe's: adamw for vision Transformers
    lr: float | None = Field(None, gt=0)  # None: the recipe's (CRD 0.05; DeiT 5e-4 x batch/512)
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD's; AdamW keeps its betas (0.9, 0.999)
    weight_decay: float = Field(5e-4, ge=0)  # the recipe's (ImageNet 1e-4, DeiT 0.05)
    schedule: Literal["step", "cosine"] = "step"  # the recipe's: cosine for vision Transformers
    lr_decay_epochs: list[int] | None = None  # None: 150/180/210 of 240, scaled to epochs
    lr_decay_rate: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int | None = Field(None, ge=0)  # None: the recipe's (DeiT 5 of 300, scaled)

    @model_validator(mode="after")
    def _check_decay(self) -> OptimOptions:
        d = self.lr_decay_epochs
        if d is not None:
            if any(e < 1 for e in d) or sorted(set(d)) != list(d):
                raise ValueError(
                    f"invalid value for --lr-decay-epochs ({','.join(map(str, d))}): give "
                    "positive, strictly increasing epochs, e.g. 150,180,210"
                )
            if d and d[-1] > self.epochs:
                raise ValueError(
                    f"invalid value for --lr-decay-epochs ({','.join(map(str, d))}): ends at "
                    f"{d[-1]}, beyond the last epoch ({self.epochs})"
                )
            if d and self.schedule == "cosine":
                raise ValueError(
                    f"invalid value for --lr-decay-epochs ({','.join(map(str, d))}): the cosine "
                    "schedule has no decay epochs; drop --lr-decay-epochs or pass --schedule step"
                )
        if self.warmup_epochs is not None and self.warmup_epochs > self.epochs:
            raise ValueError(
                f"invalid value for --warmup-epochs ({self.warmup_epochs}): beyond the last "
                f"epoch ({self.epochs}); give at most --epochs"
            )
        return self

    def recipe(self, arch: str) -> Choice:
        """The recipe this architecture, data set and optimiser train with, and why."""
        return choose(arch, getattr(self, "dataset", None), self.optimizer)

    def resolved_lr(self, arch: str, world: int = 1) -> float:
        """The learning rate: explicit, or the recipe's for this architecture and data set.

        ImageNet and DeiT scale linearly with the global batch (batch_size x `world` processes).
        """
        if self.lr is not None:
            return self.lr
        return self.recipe(arch).recipe.base_lr(arch, self.batch_size * world)

    def resolved_decay(self) -> list[int]:
        """Decay epochs: explicit, none for cosine, or the data set's scaled to the run."""
        if self.lr_decay_epochs is not None:
            return list(self.lr_decay_epochs)
        if self.schedule == "cosine":
            return []
        return step_recipe(getattr(self, "dataset", None)).decay_epochs(self.epochs)

    def resolved_warmup(self, arch: str) -> int:
        """Warm-up epochs: explicit, or the recipe's scaled to the run (DeiT: 5/300, >= 1)."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return self.recipe(arch).recipe.warmup_epochs(self.epochs)


class RunOptions(_Strict):
    """Where and how a run executes."""

    arch: str = "resnet56"
    # builder arguments of a timm:/torchvision: arch (img_size defaults to the data set's)
    model_args: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(0, ge=0)  # initialisation, CRD's negatives; the data too unless data_seed
    data_seed: int | None = Field(None, ge=0)  # data order, crops and flips; None: seed
    device: str = "auto"
    out: Path = Path("runs/run")
    overwrite: bool = False
    save_every: int = Field(1, ge=0)  # 0: only the final checkpoint (and one on interrupt)
    eval_every: int = Field(1, ge=1)  # evaluate every N epochs; the last epoch always is
    channels_last: bool = True
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    sync_bn: bool = False
    eval_batch_size: int = Field(512, ge=1)
    tensorboard: bool | None = None  # None: event files when the tensorboard package is installed

    def resolved_data_seed(self) -> int:
        """The seed of the augmentation stream (data order, crops, flips): data_seed or seed."""
        return self.seed if self.data_seed is None else self.data_seed

    @field_validator("model_args")
    @classmethod
    def _check_model_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_model_args(value, "--model-arg")


class TeacherLoss(_Strict):
    """CE + icc_weight * L_intra (METHOD.md); icc_weight 0 is the cross-entropy baseline."""

    icc_weight: float = Field(0.05, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # eps of the CE targets; 0 is off
    margin: float = Field(0.5, lt=1)  # <= -1 turns the gate off
    icc_temperature: float = Field(0.1, gt=0)
    queue_size: int = Field(64, ge=0)
    embedding: Literal["features", "logits", "projection"] = "features"
    projection_dim: int = Field(128, ge=1)
    init: Path | None = None


class TrainTeacherConfig(DataOptions, OptimOptions, RunOptions, TeacherLoss):
    """Everything `icckd train-teacher` needs."""

    # issue 29: keep the weights of each evaluated epoch in RUN/epochs/ (set by `experiment`
    # under match_teachers); excluded from config.json, so it never invalidates a finished run
    keep_snapshots: bool = Field(False, exclude=True)


Method = Literal["kd", "rkd", "kd+rkd", "dkd", "crd"]

# Published weights of each method (CRD benchmark convention for CE/KD).
METHOD_PRESETS: dict[str, dict[str, float]] = {
    "kd": {"ce_weight": 0.1, "kd_weight": 0.9, "rkd_weight": 0, "dkd_weight": 0, "crd_weight": 0},
    "rkd": {"ce_weight": 1.0, "kd_weight": 0, "rkd_weight": 1, "dkd_weight": 0, "crd_weight": 0},
    "kd+rkd": {
        "ce_weight": 0.1,
        "kd_weight": 0.9,
        "rkd_weight": 1,
        "dkd_weight": 0,
        "crd_weight": 0,
    },
    "dkd": {"ce_weight": 1.0, "kd_weight": 0, "rkd_weight": 0, "dkd_weight": 1, "crd_weight": 0},
    "crd": {"ce_weight": 1.0, "kd_weight": 0, "rkd_weight": 0, "dkd_weight": 0, "crd_weight": 0.8},
}


class StudentLoss(_Strict):
    """Named, weighted distillation terms; None weights come from the method preset."""

    teacher: Path | None = None
    teacher_arch: str | None = None
    # builder arguments of a weights-file teacher (an icckd checkpoint records its own)
    teacher_model_args: dict[str, Any] = Field(default_factory=dict)
    method: Method = "kd"
    weights: Literal["crd", "mdistiller"] = "crd"
    ce_weight: float | None = Field(None, ge=0)
    kd_weight: float | None = Field(None, ge=0)
    kd_temperature: float = Field(4.0, gt=0)
    rkd_weight: float | None = Field(None, ge=0)
    rkd_distance_weight: float = Field(25.0, ge=0)
    rkd_angle_weight: float = Field(50.0, ge=0)
    dkd_weight: float | None = Field(None, ge=0)
    dkd_alpha: float = Field(1.0, ge=0)
    dkd_beta: float = Field(8.0, ge=0)
    dkd_temperature: float = Field(4.0, gt=0)
    dkd_warmup: int | None = Field(None, ge=0)  # None: 20 of 240 epochs, scaled
    crd_weight: float | None = Field(None, ge=0)
    crd_feat_dim: int = Field(128, ge=1)
    crd_nce_k: int = Field(16384, ge=1)
    crd_temperature: float = Field(0.07, gt=0)
    crd_momentum: float = Field(0.5, ge=0, lt=1)

    @field_validator("teacher_model_args")
    @classmethod
    def _check_teacher_model_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_model_args(value, "--teacher-model-arg")

    def resolved_weights(self) -> dict[str, float]:
        """The term weights: explicit ones override the method's preset."""
        preset = dict(METHOD_PRESETS[self.method])
        if self.weights == "mdistiller" and preset["kd_weight"]:
            preset["ce_weight"], preset["kd_weight"] = 1.0, 1.0
        out = {}
        for key, value in preset.items():
            given = getattr(self, key)
            out[key] = float(value if given is None else given)
        return out


class TeacherCacheOptions(_Strict):
    """The teacher-output store (teacher_store.py): read the teacher's outputs, never run it."""

    teacher_cache: Path | None = None  # the store's folder; None: the teacher runs every step
    teacher_cache_dtype: Literal["float16", "float32"] = "float16"
    teacher_cache_topk: int | None = Field(None, ge=1)  # keep K logits a row; None: all of them
    teacher_cache_limit_gb: float = Field(32.0, gt=0)  # a bigger store is refused
    teacher_cache_embeddings: bool | None = None  # None: where a term needs them (RKD, CRD)

    def cache_embeddings(self, weights: dict[str, float]) -> bool:
        """Whether the store keeps the teacher's pooled features."""
        if self.teacher_cache_embeddings is not None:
            return self.teacher_cache_embeddings
        return bool(weights["rkd_weight"] or weights["crd_weight"])


class DistillConfig(DataOptions, OptimOptions, RunOptions, StudentLoss, TeacherCacheOptions):
    """Everything `icckd distill` needs."""

    arch: str = "resnet20"

    def resolved_dkd_warmup(self) -> int:
        """DKD's linear warm-up length in epochs (20 of the 240-epoch recipe, scaled)."""
        if self.dkd_warmup is not None:
            return self.dkd_warmup
        return max(1, round(20 * self.epochs / RECIPE_EPOCHS))


class EvalConfig(_Strict):
    """`icckd eval`: the data set defaults to the one recorded in the checkpoint."""

    checkpoint: Path
    dataset: str | None = None
    data_dir: Path | None = None
    download: bool = True
    split: Literal["test", "train", "val"] = "test"  # val: the run's held-out images
    device: str = "auto"
    batch_size: int = Field(512, ge=1)  # evaluation batch, and the batch of --latency's throughput
    latency: bool = False  # latency_ms at batch 1 and throughput at batch_size
    cost_only: bool = False  # params, size_mb, macs (and latency) without loading the data set
    format: Literal["table", "json"] = "table"


class ExportConfig(_Strict):
    """`icckd export`: a checkpoint as ONNX, TorchScript or a torch.export program, checked."""

    checkpoint: Path
    format: Literal["onnx", "torchscript", "exported"]
    out: Path
    overwrite: bool = False
    # the parity check: the export's logits against the checkpoint's on `parity_images`
    # images; the largest |difference| may be at most tolerance x max(1, largest |logit|)
    tolerance: float = Field(1e-4, gt=0)
    parity_images: int = Field(32, ge=1)
    data_dir: Path | None = None  # where the recorded data set is, if not where it was
    # the TorchScript-based ONNX exporter: 30-50x faster than torch 2.14's default dynamo
    # exporter on a CPU here (docs/shipping.md) and needs no onnxscript
    onnx_exporter: Literal["torchscript", "dynamo"] = "torchscript"
    opset: int = Field(18, ge=7)
    as_json: bool = False  # --json: the result as JSON (--format names the export format here)


class InspectConfig(_Strict):
    """`icckd inspect-softlabels`: one or more checkpoints side by side."""

    checkpoints: list[Path] = Field(min_length=1)
    dataset: str | None = None
    data_dir: Path | None = None
    download: bool = True
    split: Literal["test", "train"] = "test"
    temperature: float = Field(4.0, gt=0)
    device: str = "auto"
    batch_size: int = Field(512, ge=1)
    per_class: bool = False
    all_classes: bool = False
    plot: Path | None = None
    format: Literal["table", "json"] = "table"


class FetchConfig(_Strict):
    """`icckd fetch-teacher`: a published teacher converted into an icckd checkpoint."""

    name: str
    out: Path
    source: str | None = None  # --from: a mirror URL or a file downloaded by hand
    sha256: str | None = None  # the downloaded file's expected sha256 (full or a prefix)
    overwrite: bool = False
    evaluate: bool = True  # top-1 on the data set's test split, where the data set is present
    data_dir: Path | None = None
    device: str = "auto"
    batch_size: int = Field(512, ge=1)
    format: Literal["table", "json"] = "table"

    @model_validator(mode="after")
    def _check(self) -> FetchConfig:
        if self.out.suffix != ".safetensors":
            raise ValueError(
                f"invalid value for --out ({str(self.out)!r}): name the checkpoint FILE.safetensors"
            )
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{8,64}", self.sha256):
            raise ValueError(
                f"invalid value for --sha256 ({self.sha256!r}): give the file's sha256 as hex "
                "digits (8 to 64 of them)"
            )
        return self


class PlotConfig(_Strict):
    """`icckd plot`: learning curves of run folders side by side."""

    runs: list[Path] = Field(min_length=1)
    out: Path
    metrics: list[str] | None = None  # None: train_loss, top1 and nll
    format: Literal["table", "json"] = "table"


# keys of a run's config.json that record what was derived and are no settings
RECORDED_ONLY = ("recipe",)


def option_name(field: str) -> str:
    """The command-line spelling of a config field."""
    if field.endswith("model_args"):  # a table in TOML, a repeatable KEY=VALUE option
        field = field[:-1]
    return "--" + field.replace("_", "-")


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML config file as a dict, or a one-line error."""
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist; check the path given to --config")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML ({exc}); fix the file") from None


def build(model: type[_Strict], cli: dict[str, Any], config_file: Path | None = None) -> Any:
    """Validate command line over config file over defaults into `model`."""
    values: dict[str, Any] = read_toml(config_file) if config_file else {}
    for key, value in cli.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            value = {**values[key], **value}  # --model-arg adds to (or overrides) the file's
        if value is not None:
            values[key] = value
    unknown = [k for k in values if k not in model.model_fields]
    if unknown:
        key = unknown[0]
        where = f"in {config_file}" if config_file and key not in cli else "given"
        hint = suggest(key, model.model_fields)
        raise UsageError(f"unknown setting '{key}' {where}.{hint or ' Check the spelling.'}")
    try:
        return model(**values)
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """The first validation problem as one line naming the option."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    if msg.startswith("invalid value for"):  # a validator's own message names the option
        return msg
    if not loc:
        return msg if msg.startswith("invalid value for") else f"invalid settings: {msg}"
    field = loc[0]
    value = err.get("input")
    shown = f" ({value!r})" if value is not None and not isinstance(value, dict) else ""
    return f"invalid value for {option_name(field)}{shown}: {msg}"
