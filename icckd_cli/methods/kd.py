"""Hinton KD, optionally on standardised logits.

KD: Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", NIPS 2014
Deep Learning Workshop. Weights: the CRD benchmark (Tian et al., ICLR 2020, its CIFAR-100
protocol) trains KD students with CE 0.1 and KD 0.9 at T = 4; `--weights mdistiller` gives
mdistiller's CE 1, KD 1.

Logit standardization: Sun et al., "Logit Standardization in Knowledge Distillation", CVPR
2024: every row of student and teacher logits becomes (z - mean) / (std + 1e-7), unbiased
std, before the temperature. Off by default; its CIFAR-100 setting (base temperature 2, KD
weight 9, CE weight 0.1) is in docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from icckd_cli.methods.registry import Context, Method, Part, register

if TYPE_CHECKING:  # torch is imported where a loss runs: the CLI starts without it
    from torch import Tensor

Reduction = Literal["batchmean", "none"]

# Sun et al. 2024 add this to the standard deviation before dividing
STANDARDIZE_EPS = 1e-7


def standardize(logits: Tensor) -> Tensor:
    """Each row as (z - mean) / (unbiased std + 1e-7): (N, C) -> (N, C)."""
    mean = logits.mean(dim=1, keepdim=True)
    std = logits.std(dim=1, keepdim=True)  # unbiased: divides by C - 1
    return (logits - mean) / (std + STANDARDIZE_EPS)


def reduce(per_sample: Tensor, reduction: Reduction) -> Tensor:
    """Batch mean or per-sample values: (N,) -> () or (N,)."""
    if reduction == "none":
        return per_sample
    if reduction == "batchmean":
        return per_sample.mean()
    raise ValueError(f"unknown reduction {reduction!r}; use 'batchmean' or 'none'")


def kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) per row from log-probabilities: (N, K), (N, K) -> (N,)."""
    import torch.nn.functional as F

    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)


def kd_loss(
    logits_s: Tensor,
    logits_t: Tensor,
    temperature: float,
    *,
    standardize: bool = False,
    reduction: Reduction = "batchmean",
) -> Tensor:
    """Hinton KD, T^2 * KL(softmax(t/T) || softmax(s/T)): (N, C), (N, C) -> () or (N,).

    With `standardize`, both sides' rows are standardised first (Sun et al. 2024).
    """
    import torch.nn.functional as F

    t, s = logits_t.detach(), logits_s
    if standardize:
        t, s = _standardize(t), _standardize(s)
    log_t = F.log_softmax(t / temperature, dim=1)
    log_s = F.log_softmax(s / temperature, dim=1)
    return reduce(kl_rows(log_t, log_s) * temperature**2, reduction)


_standardize = standardize  # kd_loss's keyword of the same name hides the function


# two settings other methods' terms read too: each declares the same field, one option
KD_TEMPERATURE = Field(4.0, gt=0, description="KD temperature T.")  # CRD: T = 4
LOGIT_STANDARDIZATION = Field(
    False,
    description="Standardise student and teacher logits per row before the temperature "
    "(kd, dkd; Sun et al. 2024).",
)


class KDSettings(BaseModel):
    """KD's settings; a description makes a field a `distill` option."""

    kd_weight: float | None = Field(None, ge=0, description="Hinton KD weight.")
    kd_temperature: float = KD_TEMPERATURE
    logit_standardization: bool = LOGIT_STANDARDIZATION


def _check(settings: KDSettings, weights: Mapping[str, float], method: str) -> None:
    """--logit-standardization acts on the kd and dkd terms: refuse it where neither runs."""
    if settings.logit_standardization and not any(
        weights.get(k) for k in ("kd_weight", "dkd_weight")
    ):
        raise ValueError(
            "invalid value for --logit-standardization: it standardises the logits of the "
            f"kd and dkd terms and --method {method} has neither; use --method kd or dkd, "
            "or give --kd-weight"
        )


def _build(settings: KDSettings, context: Context) -> dict[str, Part]:
    temperature = settings.kd_temperature
    standard = settings.logit_standardization

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        return kd_loss(out["logits"], out["t_logits"], temperature, standardize=standard)

    return {"kd": Part(term)}


KD = register(
    Method(
        name="kd",
        order=10,
        parts=("kd",),
        settings=KDSettings,
        preset={"ce_weight": 0.1, "kd_weight": 0.9},
        build=_build,
        recorded=("kd_temperature", "logit_standardization"),
        check=_check,
    )
)
