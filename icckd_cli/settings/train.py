"""The settings of train-teacher and distill; the student's are composed from the methods.

Each distillation method (methods/, one file each) brings its own settings model; StudentLoss
inherits them all, so a method's fields are TOML keys and `distill` options without a line
here. The --method presets are the methods' published weights (methods/registry.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from icckd_cli.methods import registry
from icckd_cli.settings.common import _Strict, check_model_args
from icckd_cli.settings.data import DataOptions
from icckd_cli.settings.optim import OptimOptions
from icckd_cli.settings.recipes import Choice, choose, step_recipe
from icckd_cli.settings.run import RunOptions


class TeacherLoss(_Strict):
    """CE + icc_weight * L_intra (docs/method.md); icc_weight 0 is the cross-entropy baseline."""

    icc_weight: float = Field(0.05, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # eps of the CE targets; 0 is off
    margin: float = Field(0.5, lt=1)  # <= -1 turns the gate off
    icc_temperature: float = Field(0.1, gt=0)
    queue_size: int = Field(64, ge=0)
    embedding: Literal["features", "logits", "projection"] = "features"
    projection_dim: int = Field(128, ge=1)
    init: Path | None = None


class RunSettings(DataOptions, OptimOptions, RunOptions):
    """What a teacher run and a student run share: data, optimiser and schedule, execution.

    Frozen: built once at the command line (or from an experiment or tune file), it is the
    run's one settings object; commands/inputs.resolve_run fills in what the recipe derives.
    """

    model_config = ConfigDict(frozen=True)

    def recipe(self, arch: str) -> Choice:
        """The recipe this architecture, data set and optimiser train with, and why."""
        return choose(arch, self.dataset, self.optimizer)

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
        return step_recipe(self.dataset).decay_epochs(self.epochs)

    def resolved_warmup(self, arch: str) -> int:
        """Warm-up epochs: explicit, or the recipe's scaled to the run (DeiT: 5/300, >= 1)."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return self.recipe(arch).recipe.warmup_epochs(self.epochs)


class TrainTeacherConfig(RunSettings, TeacherLoss):
    """Everything `icckd train-teacher` needs."""

    # accuracy-matched teachers: keep the weights of each evaluated epoch in RUN/epochs/ (set
    # by `experiment` under match_teachers); excluded from config.json, so it never invalidates
    # a finished run
    keep_snapshots: bool = Field(False, exclude=True)


# every registered method and preset, in the registry's order
Method = Literal[registry.choices()]  # type: ignore[valid-type]

# Published weights of each --method value (each method file cites its own)
METHOD_PRESETS: dict[str, dict[str, float]] = {
    name: registry.preset_weights(name) for name in registry.choices()
}


class _Teacher(_Strict):
    """Which teacher, which method; the methods' own settings follow (StudentLoss)."""

    teacher: Path | None = None
    teacher_arch: str | None = None
    # builder arguments of a weights-file teacher (an icckd checkpoint records its own)
    teacher_model_args: dict[str, Any] = Field(default_factory=dict)
    method: Method = "kd"  # type: ignore[valid-type]
    weights: Literal["crd", "mdistiller"] = "crd"
    ce_weight: float | None = Field(None, ge=0)

    @field_validator("teacher_model_args")
    @classmethod
    def _check_teacher_model_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_model_args(value, "--teacher-model-arg")


# bases listed last-method-first: pydantic then orders the fields in method order
_METHOD_SETTINGS = tuple(m.settings for m in reversed(registry.methods()))


class StudentLoss(*_METHOD_SETTINGS, _Teacher):  # type: ignore[misc]
    """Named, weighted distillation terms; None weights come from the method preset."""

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

    @model_validator(mode="after")
    def _methods_check(self) -> StudentLoss:
        """Each method's own refusals (its `check` hook) of these settings and weights."""
        registry.check_all(self, self.resolved_weights(), self.method)
        return self


class TeacherCacheOptions(_Strict):
    """The teacher-output store (training/store.py): read the teacher's outputs, never run it."""

    teacher_cache: Path | None = None  # the store's folder; None: the teacher runs every step
    teacher_cache_dtype: Literal["float16", "float32"] = "float16"
    teacher_cache_topk: int | None = Field(None, ge=1)  # keep K logits a row; None: all of them
    teacher_cache_limit_gb: float = Field(32.0, gt=0)  # a bigger store is refused
    teacher_cache_embeddings: bool | None = None  # None: where a term needs them (RKD, CRD)

    def cache_embeddings(self, weights: dict[str, float]) -> bool:
        """Whether the store keeps the teacher's pooled features."""
        if self.teacher_cache_embeddings is not None:
            return self.teacher_cache_embeddings
        return registry.needs_teacher_features(weights)


class UnlabeledOptions(_Strict):
    """Images without labels and consistent teaching (docs/distill.md, "Few labels")."""

    labels_per_class: int | None = Field(None, ge=1)  # the first N a class keep their label
    unlabeled_dir: Path | None = None  # extra images without labels, any folder layout
    # the share of unlabelled images in each batch; None: every image equally likely
    unlabeled_ratio: float | None = Field(None, ge=0, lt=1)
    mixup: float = Field(0.0, ge=0)  # Beta(a, a) per batch, to teacher and student; 0: off

    def hides_labels(self) -> bool:
        """Whether some training images come without a label."""
        return self.labels_per_class is not None or self.unlabeled_dir is not None

    def masked_ce(self) -> bool:
        """Whether CE reads only the labelled images (and mixup's pairs) of a batch."""
        return self.hides_labels() or self.mixup > 0


class DistillConfig(RunSettings, StudentLoss, TeacherCacheOptions, UnlabeledOptions):
    """Everything `icckd distill` needs."""

    arch: str = "resnet20"

    @model_validator(mode="after")
    def _store_holds_no_maps(self) -> DistillConfig:
        """The teacher-output store keeps logits and pooled features, never feature maps."""
        if self.teacher_cache is not None and registry.needs_teacher_stages(
            self.resolved_weights()
        ):
            raise ValueError(
                f"--method {self.method} reads the teacher's intermediate feature maps, and the "
                "teacher-output store keeps logits and pooled features only; drop --teacher-cache"
            )
        return self

    @model_validator(mode="after")
    def _live_teacher(self) -> DistillConfig:
        """Function matching needs the teacher on the student's own view: no fixed store."""
        if self.teacher_cache is not None and (self.hides_labels() or self.mixup > 0):
            given = "--mixup" if not self.hides_labels() else "unlabelled images"
            raise ValueError(
                f"--teacher-cache cannot serve {given}: the teacher must run live on exactly "
                "the view the student sees (a fixed target is what function matching argues "
                "against); drop --teacher-cache"
            )
        if self.unlabeled_ratio and not self.hides_labels():
            raise ValueError(
                f"--unlabeled-ratio {self.unlabeled_ratio:g} needs unlabelled images; "
                "add --labels-per-class N or --unlabeled-dir DIR"
            )
        if self.hides_labels() and self.imbalance_factor != 1:
            raise ValueError(
                "--imbalance-factor cannot be combined with unlabelled images yet; drop one"
            )
        return self


# the settings of one training run, either kind
RunConfig = TrainTeacherConfig | DistillConfig
