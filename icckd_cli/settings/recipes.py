"""The training recipes (CRD CIFAR, ImageNet, DeiT), chosen in one place from the architecture,
the data set and a given `--optimizer`.

- CRD (Tian et al. 2020, "Contrastive Representation Distillation", ICLR; the CIFAR-100
  benchmark every KD paper since reuses): SGD momentum 0.9, lr 0.05 (0.01 for MobileNetV2 and
  the ShuffleNets), weight decay 5e-4, lr x0.1 at epochs 150, 180 and 210 of 240.
- ImageNet: the ResNet34 -> ResNet18 KD protocol, as in mdistiller's
  configs/imagenet/r34_r18/kd.yaml: 100 epochs, SGD momentum 0.9, weight decay 1e-4,
  lr x0.1 at epochs 30, 60 and 90, lr 0.1 per 256 images of the global batch (0.2 at 512);
  KD with CE 0.5, KD 0.5, T = 1 (a method's own ImageNet values are in its file, methods/).
- DeiT (Touvron et al. 2021, "Training data-efficient image transformers & distillation
  through attention", ICML, Table 9): AdamW, lr 5e-4 x global batch / 512, weight decay 0.05,
  a cosine schedule after 5 linear warm-up epochs of 300. Vision Transformers get it; the
  warm-up scales with `--epochs` as the step recipes' decay epochs do (5/300 of E, at least 1).

Which recipe a run gets is `choose()`; every default a recipe sets is `recipe_defaults()`.
Values given on the command line or in a config file always win, field by field. This module
imports nothing of the package (config.py imports it), and torch only where a model is seen.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

RECIPE_EPOCHS = 240
RECIPE_DECAY = (150, 180, 210)
SMALL_LR_FAMILIES = ("MobileNetV2", "ShuffleV1", "ShuffleV2")

IMAGENET_EPOCHS = 100
IMAGENET_DECAY = (30, 60, 90)
IMAGENET_LR_PER_256 = 0.1
# Per-class cache size with 1,000 classes: the CIFAR value, measured in docs/performance.md
# ("The intra-class cache on 1,000 classes"): with ~0.26 same-class images per batch of 256
# the cache supplies nearly every negative, 64 matches CIFAR-100's negatives per anchor, and
# it costs 125 MiB (D = 512) and well under 0.1% of a ResNet-18 step; 256 would cost 4x the
# memory (and state-file size) for staler negatives.
IMAGENET_QUEUE_SIZE = 64
# The ImageNet data set's own defaults, whichever optimiser recipe trains on it.
IMAGENET_RECIPE: dict[str, Any] = {
    "epochs": IMAGENET_EPOCHS,
    "batch_size": 256,
    "momentum": 0.9,
    "queue_size": IMAGENET_QUEUE_SIZE,
}
IMAGENET_KD_WEIGHTS: dict[str, Any] = {"ce_weight": 0.5, "kd_weight": 0.5, "kd_temperature": 1.0}

DEIT_EPOCHS = 300
DEIT_WARMUP = 5
DEIT_LR_PER_512 = 5e-4

# Vision Transformers and attention hybrids, by the library's own names (lower case; a timm
# pretrained tag such as '.augreg_in21k' is ignored). Their papers train them with AdamW and a
# cosine schedule as DeiT does. ConvNeXt, MLP-Mixers and MetaFormers without attention count
# as CNNs here (pass --optimizer adamw for their AdamW recipes).
TRANSFORMERS: dict[str, tuple[str, ...]] = {
    "timm": (
        "vit_*", "vitamin_*", "flexivit_*", "naflexvit_*", "deit_*", "deit3_*", "cait_*",
        "beit*", "eva*", "aimv2_*", "samvit_*", "swin*", "pvt_*", "twins_*", "xcit_*", "levit*",
        "crossvit_*", "convit_*", "tnt_*", "pit_*", "coat_*", "coatnet*", "maxvit_*", "maxxvit*",
        "davit_*", "gcvit_*", "mvitv2_*", "hiera*", "nest_*", "nextvit_*", "tiny_vit_*",
        "mobilevit*", "efficientformer*", "efficientvit_*", "fastvit_*", "swiftformer_*",
        "visformer_*", "volo_*", "shvit_*",
    ),
    "torchvision": ("vit_*", "swin_*", "maxvit_*"),
}  # fmt: skip


def is_transformer(arch: str) -> bool:
    """True for a vision Transformer named `timm:<name>` or `torchvision:<builder>`."""
    library, sep, name = arch.lower().partition(":")
    if not sep or library not in TRANSFORMERS:
        return False  # the zoo's own names are its CNNs
    name = name.split(".", 1)[0]  # timm:vit_small_patch16_224.augreg_in21k
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in TRANSFORMERS[library])


@dataclass(frozen=True)
class Recipe:
    """An optimiser, its learning rate and weight decay, and a schedule of a published length."""

    name: str
    optimizer: str  # "sgd" or "adamw"
    schedule: str  # "step" or "cosine"
    weight_decay: float
    lr: float  # at `lr_batch` images of the global batch (None: at any batch)
    lr_batch: int | None
    epochs: int  # the published length, from which decay and warm-up epochs scale
    decay: tuple[int, ...] = ()  # step decay epochs of `epochs`
    warmup: int = 0  # linear warm-up epochs of `epochs`
    small_lr: Mapping[str, float] = field(default_factory=dict)  # per-architecture lr

    def base_lr(self, arch: str, batch: int) -> float:
        """The learning rate for this architecture at a global batch of `batch` images."""
        if arch in self.small_lr:
            return self.small_lr[arch]
        return self.lr if self.lr_batch is None else self.lr * batch / self.lr_batch

    def decay_epochs(self, epochs: int) -> list[int]:
        """The step decay epochs scaled from the published length to `epochs`."""
        scaled = [round(e * epochs / self.epochs) for e in self.decay]
        return sorted({e for e in scaled if 0 < e < epochs})

    def warmup_epochs(self, epochs: int) -> int:
        """The warm-up scaled to `epochs`: at least 1 where the recipe warms up, at most all."""
        if not self.warmup:
            return 0
        return min(epochs, max(1, round(self.warmup * epochs / self.epochs)))


CRD = Recipe(
    "CRD", "sgd", "step", 5e-4, 0.05, None, RECIPE_EPOCHS, RECIPE_DECAY,
    small_lr=dict.fromkeys(SMALL_LR_FAMILIES, 0.01),
)  # fmt: skip
IMAGENET = Recipe(
    "ImageNet", "sgd", "step", 1e-4, IMAGENET_LR_PER_256, 256, IMAGENET_EPOCHS, IMAGENET_DECAY
)
DEIT = Recipe("DeiT", "adamw", "cosine", 0.05, DEIT_LR_PER_512, 512, DEIT_EPOCHS, (), DEIT_WARMUP)
RECIPES = {r.name: r for r in (CRD, IMAGENET, DEIT)}


@dataclass(frozen=True)
class Choice:
    """The recipe a run gets, the step-decay recipe of its data set, and why."""

    recipe: Recipe
    steps: Recipe  # decay epochs for `--schedule step` (CRD or ImageNet)
    reason: str


def step_recipe(dataset: str | None) -> Recipe:
    """The data set's SGD step recipe: ImageNet's on imagenet, CRD's elsewhere."""
    return IMAGENET if dataset == "imagenet" else CRD


def choose(arch: str, dataset: str | None, optimizer: str | None = None) -> Choice:
    """The recipe: DeiT for a vision Transformer, else the data set's; a given optimiser rules.

    `--optimizer adamw` on a CNN gives the DeiT recipe, `--optimizer sgd` on a Transformer the
    data set's SGD recipe, so the learning rate and weight decay always suit the optimiser.
    """
    steps = step_recipe(dataset)
    if is_transformer(arch):
        recipe, reason = DEIT, f"{arch} is a vision Transformer"
    else:
        recipe, reason = steps, f"{arch} is a CNN on {dataset or 'cifar100'}"
    if optimizer is not None and optimizer != recipe.optimizer:
        recipe = DEIT if optimizer == "adamw" else steps
        reason = f"--optimizer {optimizer} given"
    return Choice(recipe, steps, reason)


def recipe_defaults(
    dataset: str | None,
    fields: Iterable[str],
    method: str | None = None,
    arch: str | None = None,
    given: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The defaults the recipe and data set set for the given config fields.

    `given` holds the values already given: `optimizer` chooses the recipe, and decay epochs
    given without a schedule mean the step schedule.
    """
    given = given or {}
    out: dict[str, Any] = {}
    if dataset == "imagenet":
        out.update(IMAGENET_RECIPE)
        if method in (None, "kd"):  # the KD weights of the ImageNet protocol belong to KD alone
            out.update(IMAGENET_KD_WEIGHTS)
    if arch is not None:
        recipe = choose(arch, dataset, given.get("optimizer")).recipe
        schedule = "step" if given.get("lr_decay_epochs") else recipe.schedule
        out.update(optimizer=recipe.optimizer, schedule=schedule, weight_decay=recipe.weight_decay)
    wanted = set(fields)
    return {k: v for k, v in out.items() if k in wanted}


def summary(config: Mapping[str, Any], world: int = 1, lr_given: bool = False) -> dict[str, Any]:
    """What a run's resolved config trains with, for its first line (report.recipe_line)."""
    choice = choose(config["arch"], config.get("dataset"), config.get("optimizer"))
    r = choice.recipe
    batch = config["batch_size"] * world
    rule = None
    if not lr_given and r.lr_batch is not None and config["arch"] not in r.small_lr:
        rule = {"lr": r.lr, "batch": batch, "per": r.lr_batch}
    keys = ("optimizer", "lr", "momentum", "weight_decay", "schedule", "warmup_epochs")
    return {
        "name": r.name,
        "reason": choice.reason,
        "lr_rule": rule,
        "decay_epochs": config.get("lr_decay_epochs") or [],
        "decay_rate": config.get("lr_decay_rate"),
        **{k: config.get(k) for k in keys},
    }


# ----------------------------------------------------------------------------- the optimiser


def no_decay(name: str, param: torch.Tensor, skip: set[str]) -> bool:
    """DeiT/timm's rule: biases, norm scales (1-D) and position/class tokens are not decayed."""
    return param.ndim <= 1 or name in skip or name.endswith(".bias")


def make_optimizer(
    modules: Iterable[torch.nn.Module],
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float,
) -> torch.optim.Optimizer:
    """SGD over every trainable parameter (decay on all, as CRD), or AdamW as DeiT.

    AdamW keeps torch's betas (0.9, 0.999) and eps 1e-8, DeiT's too, and leaves biases, norm
    scales and the tokens a model lists in `no_weight_decay()` undecayed (timm's rule).
    """
    import torch

    modules = list(modules)
    if name == "sgd":
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    decay: list[torch.nn.Parameter] = []
    rest: list[torch.nn.Parameter] = []
    for module in modules:
        skip = _no_weight_decay_names(module)
        for pname, p in module.named_parameters():
            if p.requires_grad:
                (rest if no_decay(pname, p, skip) else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def _no_weight_decay_names(module: torch.nn.Module) -> set[str]:
    """Full names of the parameters a model (or a wrapped timm model) asks not to decay."""
    out: set[str] = set()
    for prefix, sub in module.named_modules():
        listed = getattr(sub, "no_weight_decay", None)
        if callable(listed):
            names = listed()
            out.update(f"{prefix}.{n}" if prefix else n for n in names)
    return out
