"""DIST: Huang, You, Wang, Qian and Xu, "Knowledge Distillation from A Stronger Teacher",
NeurIPS 2022.

The student keeps the teacher's relations rather than its exact probabilities: with
p = softmax(z / T) on each side, (B, C),
    inter = 1 - mean over rows i of Pearson(p_s[i], p_t[i])     (the classes of one image)
    intra = 1 - mean over columns j of Pearson(p_s[:, j], p_t[:, j])  (one class over the batch)
    loss  = T^2 (beta * inter + gamma * intra)
Pearson is the cosine of the mean-centred vectors, with 1e-8 added to the product of norms.

Defaults: the authors' CIFAR-100 setting, beta = gamma = 2 and tau = 4 beside CE weight 1
(their released configuration writes it as beta = gamma = 1, tau = 4 at loss weight 2;
docs/methods.md). The temperature is `--kd-temperature` (default 4); the preset weighs CE 1
and the DIST term 1, so beta and gamma carry the 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from icckd_cli.methods.kd import KD_TEMPERATURE
from icckd_cli.methods.registry import Context, Method, Part, register

if TYPE_CHECKING:  # torch is imported where a loss runs: the CLI starts without it
    from torch import Tensor

# added to the product of the norms, so a constant row or column gives 0, not 0/0
PEARSON_EPS = 1e-8


def pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of each row of a with the same row of b: (N, K), (N, K) -> (N,)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + PEARSON_EPS)


def dist_terms(logits_s: Tensor, logits_t: Tensor, *, temperature: float) -> tuple[Tensor, Tensor]:
    """DIST's (inter, intra) relation losses, unscaled: (B, C), (B, C) -> (), ()."""
    p_s = (logits_s / temperature).softmax(dim=1)  # (B, C)
    p_t = (logits_t.detach() / temperature).softmax(dim=1)  # (B, C)
    inter = 1 - pearson_rows(p_s, p_t).mean()
    intra = 1 - pearson_rows(p_s.T, p_t.T).mean()  # columns: each class across the batch
    return inter, intra


def dist_loss(
    logits_s: Tensor, logits_t: Tensor, *, temperature: float, beta: float, gamma: float
) -> Tensor:
    """DIST, T^2 (beta * inter + gamma * intra): (B, C), (B, C) -> ()."""
    inter, intra = dist_terms(logits_s, logits_t, temperature=temperature)
    return temperature**2 * (beta * inter + gamma * intra)


class DISTSettings(BaseModel):
    """DIST's settings (Huang et al. 2022, CIFAR-100: beta = gamma = 2, tau = 4)."""

    dist_weight: float | None = Field(None, ge=0, description="DIST weight.")
    dist_beta: float = Field(2.0, ge=0, description="DIST inter-class (per image) weight.")
    dist_gamma: float = Field(2.0, ge=0, description="DIST intra-class (per class) weight.")
    kd_temperature: float = KD_TEMPERATURE  # kd.py's option: DIST's tau


def _build(settings: DISTSettings, context: Context) -> dict[str, Part]:
    temperature = settings.kd_temperature
    beta, gamma = settings.dist_beta, settings.dist_gamma

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        return dist_loss(
            out["logits"], out["t_logits"], temperature=temperature, beta=beta, gamma=gamma
        )

    return {"dist": Part(term)}


DIST = register(
    Method(
        name="dist",
        order=50,
        parts=("dist",),
        settings=DISTSettings,
        preset={"ce_weight": 1.0, "dist_weight": 1.0},
        build=_build,
        recorded=("dist_beta", "dist_gamma"),
    )
)
