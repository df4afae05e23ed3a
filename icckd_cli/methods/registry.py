"""The registry of distillation methods: each method file registers itself here.

A method is one module in this folder that calls `register(Method(...))`: its name, the loss
parts it logs, its settings (a pydantic model whose fields are the TOML keys and, where they
carry a description, the `distill` options), its published term weights, a function that
builds its objective terms from its own typed settings, and the hooks it needs (`resolve`:
settings derived from the run, such as a warm-up scaled to its epochs; `check`: a refusal of
settings that make no sense with the run's weights; `dataset_defaults`: a data set's
published values). The objective calls these hooks and knows no method by name. A
combination of registered terms (kd+rkd) is a `Preset`. The settings, the CLI, the tables and
`experiment` read everything from here, so adding a method is one new file and its test.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from torch import Tensor, nn

    from icckd_cli.models.features import StageShapes

# what a term reads (logits, features, labels, t_logits, t_features, batch, epoch) and the
# statistics it may add; it returns the unweighted scalar
TermFn = Callable[[dict[str, Any], dict[str, "Tensor"]], "Tensor"]


@dataclass(frozen=True)
class Context:
    """What building a method's terms may need beyond its settings."""

    feature_dim: int  # the student's pooled feature size
    teacher_feature_dim: int  # the teacher's pooled feature size (0 when unknown)
    train_size: int  # training images (CRD's memory has one row per image)
    epochs: int = 0  # the run's length (a warm-up scales with it)
    # the maps a method that reads them pairs (models/features.py), measured before training
    student_stages: StageShapes | None = None
    teacher_stages: StageShapes | None = None
    # (weights, biases) of the BatchNorm before each teacher stage's last ReLU, where it has one
    teacher_norms: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] | None = None


@dataclass(frozen=True)
class Part:
    """One built term: its function and the module it trains beside the model, if any."""

    fn: TermFn | None  # None: no term after the method's preliminary stage
    module: nn.Module | None = None  # registered on the objective under the part's name
    preliminary: TermFn | None = None  # its loss in the method's preliminary stage, if any


@dataclass(frozen=True)
class Method:
    """A distillation method: its terms, settings, published weights and term builder."""

    name: str  # the --method value
    order: int  # place among the methods (--method choices, term order, table columns)
    parts: tuple[str, ...]  # loss-part names it logs; each is weighted by <part>_weight
    settings: type[BaseModel]  # fields with published defaults (and the <part>_weight fields)
    preset: Mapping[str, float]  # the --method preset: ce_weight and <part>_weight values
    # its settings (an instance of `settings`, resolved) -> its parts by name
    build: Callable[[Any, Context], dict[str, Part]]
    recorded: tuple[str, ...] = ()  # settings written into the checkpoint's objective record
    teacher_features: bool = False  # a term reads the teacher's pooled features
    # settings -> settings with what the run decides filled in (DKD: its warm-up's length)
    resolve: Callable[[Any, Context], Any] | None = None
    # (settings, the run's term weights, the --method value): raise ValueError to refuse
    check: Callable[[Any, Mapping[str, float], str], None] | None = None
    # a data set's published values of its settings, under the data set's name
    dataset_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # a term reads intermediate feature maps (`stages`, `t_stages`), which the
    # teacher-output store does not hold
    stages: bool = False
    # resolved settings -> epochs of its preliminary stage, run before the others: its parts'
    # `preliminary` terms alone (RepDistiller's `init`)
    preliminary: Callable[[Any], int] | None = None
    # the student stays in eval mode in that stage (its loss trains only the method's modules)
    preliminary_eval: bool = False

    def settings_from(self, values: BaseModel | Mapping[str, Any]) -> BaseModel:
        """This method's own typed settings out of a run's settings (a model or a dict)."""
        fields = set(self.settings.model_fields)
        if isinstance(values, BaseModel):
            given = values.model_dump(include=fields)
        else:
            given = {k: v for k, v in values.items() if k in fields}
        return self.settings.model_validate(given)

    def resolved(self, values: BaseModel | Mapping[str, Any], context: Context) -> BaseModel:
        """Its settings with what the run decides filled in (the `resolve` hook)."""
        settings = self.settings_from(values)
        return settings if self.resolve is None else self.resolve(settings, context)


@dataclass(frozen=True)
class Preset:
    """A --method value combining registered terms with published weights (kd+rkd)."""

    name: str
    order: int
    preset: Mapping[str, float] = field(default_factory=dict)


# modules of this folder that hold no method: imported where they are used (with torch)
HELPERS = frozenset({"registry", "queue", "icc", "crd_nce", "feature_maps"})
# the entry-point group of methods outside this folder: a distribution (or a test) names a
# module here, e.g. `toy = "toy_method"`, and importing that module registers its method
ENTRY_POINTS = "icckd_cli.methods"

_METHODS: dict[str, Method] = {}
_PRESETS: dict[str, Preset | Method] = {}
_LOADED = False


def register(entry: Method | Preset) -> Method | Preset:
    """Add a method (or a preset) under its name; a name may be registered once."""
    if entry.name in _PRESETS:
        raise ValueError(f"method {entry.name!r} is registered twice")
    _PRESETS[entry.name] = entry
    if isinstance(entry, Method):
        _METHODS[entry.name] = entry
    return entry


def _load() -> None:
    """Import every module of this folder once, so each method file registers itself."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    package = __name__.rsplit(".", 1)[0]
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if info.name not in HELPERS and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINTS):
        entry.load()


def methods() -> list[Method]:
    """The registered methods in their order."""
    _load()
    return sorted(_METHODS.values(), key=lambda m: m.order)


def choices() -> tuple[str, ...]:
    """Every --method value (methods and presets) in order: kd, rkd, kd+rkd, dkd, crd, ..."""
    _load()
    return tuple(p.name for p in sorted(_PRESETS.values(), key=lambda p: p.order))


def weight_keys() -> tuple[str, ...]:
    """The term weights a distillation has: ce_weight, then <part>_weight in method order."""
    return ("ce_weight", *(f"{p}_weight" for m in methods() for p in m.parts))


def preset_weights(name: str) -> dict[str, float]:
    """A --method value's published weights, every weight key present (0: term off)."""
    _load()
    given = _PRESETS[name].preset
    return {key: given.get(key, 0) for key in weight_keys()}


def loss_parts() -> tuple[str, ...]:
    """Loss-part names in presentation order: total, CE, the teacher's icc, then each method's."""
    return ("loss", "ce", "icc", *(p for m in methods() for p in m.parts))


def dataset_defaults(dataset: str | None) -> dict[str, Any]:
    """Every method's published values for this data set (ImageNet's DKD temperature, ...)."""
    out: dict[str, Any] = {}
    for method in methods():
        out.update(method.dataset_defaults.get(dataset or "", {}))
    return out


def check_all(values: BaseModel, weights: Mapping[str, float], method: str) -> None:
    """Each method's `check` hook on a run's settings; the first refusal raises ValueError."""
    for entry in methods():
        if entry.check is not None:
            entry.check(entry.settings_from(values), weights, method)


def needs_teacher_features(weights: Mapping[str, float]) -> bool:
    """Whether any term with a non-zero weight reads the teacher's pooled features."""
    return any(weights.get(f"{p}_weight") for m in methods() if m.teacher_features for p in m.parts)


def needs_teacher_stages(weights: Mapping[str, float]) -> bool:
    """Whether any term with a non-zero weight reads intermediate feature maps."""
    return any(weights.get(f"{p}_weight") for m in methods() if m.stages for p in m.parts)
