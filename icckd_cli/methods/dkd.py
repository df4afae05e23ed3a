"""Decoupled KD (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022).

alpha * TCKD + beta * NCKD at T = 4 with alpha 1, beta 8 and CE 1: the paper's CIFAR-100
setting (its code, mdistiller, configs/cifar100/dkd), with a linear warm-up of the DKD term
over the first 20 of 240 epochs (scaled to the run). `--logit-standardization` (shared with
kd.py) standardises both sides' logits first, as Sun et al. 2024 do for DKD. On ImageNet the
paper's ResNet34 -> ResNet18 setting (mdistiller configs/imagenet/r34_r18/dkd.yaml): T = 1,
beta 0.5, one warm-up epoch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from icckd_cli.methods.kd import LOGIT_STANDARDIZATION, Reduction, kl_rows, reduce, standardize
from icckd_cli.methods.registry import Context, Method, Part, register

if TYPE_CHECKING:  # torch is imported where a loss runs: the CLI starts without it
    from torch import Tensor

# the paper's warm-up: 20 epochs of its 240-epoch CIFAR-100 schedule
WARMUP_EPOCHS, SCHEDULE_EPOCHS = 20, 240
# the paper's ImageNet values (mdistiller configs/imagenet/r34_r18/dkd.yaml)
IMAGENET = {"dkd_temperature": 1.0, "dkd_beta": 0.5, "dkd_warmup": 1}


def warmup_epochs(given: int | None, epochs: int) -> int:
    """DKD's warm-up length: given, or 20 of 240 epochs scaled to the run (at least 1)."""
    if given is not None:
        return given
    return max(1, round(WARMUP_EPOCHS * epochs / SCHEDULE_EPOCHS))


def _binary_log_probs(logits: Tensor, target: Tensor) -> Tensor:
    """log [p_y, 1 - p_y] computed in log space, stable for confident logits: (N, C) -> (N, 2)."""
    import torch
    import torch.nn.functional as F

    lse = logits.logsumexp(dim=1)
    log_target = logits.gather(1, target[:, None]).squeeze(1) - lse
    log_rest = logits.masked_fill(F.one_hot(target, logits.shape[1]).bool(), float("-inf"))
    return torch.stack([log_target, log_rest.logsumexp(dim=1) - lse], dim=1)


def dkd_parts(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float,
    reduction: Reduction = "batchmean",
) -> tuple[Tensor, Tensor]:
    """DKD's (TCKD, NCKD), each scaled by T^2: (N, C), (N, C), (N,) -> () or (N,) each."""
    import torch
    import torch.nn.functional as F

    s = student_logits / temperature
    t = teacher_logits.detach() / temperature
    target = labels.to(s.device).long()
    c = s.shape[1]
    tckd = kl_rows(_binary_log_probs(t, target), _binary_log_probs(s, target))
    # dropping the target column renormalises over the non-target classes exactly; a gather
    # of the other columns, not a boolean mask, whose indexing would wait for the device
    j = torch.arange(c - 1, device=s.device)[None, :]  # (1, C-1)
    others = j + (j >= target[:, None]).long()  # (N, C-1): every column but the target
    log_t_rest = F.log_softmax(t.gather(1, others), dim=1)
    log_s_rest = F.log_softmax(s.gather(1, others), dim=1)
    nckd = kl_rows(log_t_rest, log_s_rest)
    scale = temperature**2
    return reduce(tckd * scale, reduction), reduce(nckd * scale, reduction)


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
    beta: float,
    temperature: float,
    standardize_logits: bool = False,
) -> Tensor:
    """Decoupled KD, alpha * TCKD + beta * NCKD, no warm-up: (N, C), (N, C), (N,) -> ()."""
    if standardize_logits:
        student_logits = standardize(student_logits)
        teacher_logits = standardize(teacher_logits.detach())
    tckd, nckd = dkd_parts(student_logits, teacher_logits, labels, temperature=temperature)
    return alpha * tckd + beta * nckd


class DKDSettings(BaseModel):
    """DKD's settings (Zhao et al. 2022, CIFAR-100)."""

    dkd_weight: float | None = Field(None, ge=0, description="DKD weight.")
    dkd_alpha: float = Field(1.0, ge=0, description="DKD target-class weight.")
    dkd_beta: float = Field(8.0, ge=0, description="DKD non-target weight.")
    dkd_temperature: float = Field(4.0, gt=0, description="DKD temperature.")
    # None: 20 of 240 epochs, scaled
    dkd_warmup: int | None = Field(None, ge=0, description="DKD warm-up epochs.")
    logit_standardization: bool = LOGIT_STANDARDIZATION  # kd.py's option, read here too


def _resolve(settings: DKDSettings, context: Context) -> DKDSettings:
    """The warm-up's length in epochs: given, or 20 of 240 scaled to the run's epochs."""
    warmup = warmup_epochs(settings.dkd_warmup, context.epochs)
    return settings.model_copy(update={"dkd_warmup": warmup})


def _build(settings: DKDSettings, context: Context) -> dict[str, Part]:
    alpha, beta = settings.dkd_alpha, settings.dkd_beta
    temperature, warmup = settings.dkd_temperature, settings.dkd_warmup or 0
    standard = settings.logit_standardization

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        # linear warm-up: epoch e (from 0) weighs (e + 1) / warmup until it reaches 1
        ramp = min((out["epoch"] + 1) / warmup, 1.0) if warmup else 1.0
        loss = dkd_loss(
            out["logits"],
            out["t_logits"],
            out["labels"],
            alpha=alpha,
            beta=beta,
            temperature=temperature,
            standardize_logits=standard,
        )
        return ramp * loss

    return {"dkd": Part(term)}


DKD = register(
    Method(
        name="dkd",
        order=30,
        parts=("dkd",),
        settings=DKDSettings,
        preset={"ce_weight": 1.0, "dkd_weight": 1},
        build=_build,
        recorded=("dkd_alpha", "dkd_beta", "dkd_temperature", "dkd_warmup"),
        resolve=_resolve,
        dataset_defaults={"imagenet": IMAGENET},
    )
)
