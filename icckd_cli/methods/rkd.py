"""Relational KD (Park et al., "Relational Knowledge Distillation", CVPR 2019).

Distance and angle terms on the pooled features, weighted 25 and 50 as in the paper's
experiments and in the CRD benchmark's CIFAR-100 RKD runs (Tian et al., ICLR 2020); the RKD
term enters with weight 1 beside CE 1. `kd+rkd` adds it to KD's CE 0.1 / KD 0.9.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:  # torch is imported where a loss runs: the CLI starts without it
    from torch import Tensor


def _pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances with an exact-zero diagonal: (N, D) -> (N, N)."""
    import torch

    sq = x.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2 * x @ x.T
    # the clamp keeps sqrt's gradient finite where two rows coincide
    off_diag = 1 - torch.eye(x.shape[0], device=x.device, dtype=x.dtype)
    return d2.clamp(min=1e-12).sqrt() * off_diag


def _normalised_distances(x: Tensor) -> Tensor:
    """Pairwise distances divided by their mean over off-diagonal pairs: (N, D) -> (N, N)."""
    n = x.shape[0]
    d = _pairwise_distances(x)
    return d / (d.sum() / (n * (n - 1)))


def _angles(x: Tensor) -> Tensor:
    """Cosine of the angle at vertex i between rows j and k, flattened: (N, D) -> (N^3,)."""
    import torch
    import torch.nn.functional as F

    diff = F.normalize(x[None, :, :] - x[:, None, :], dim=2)  # (N, N, D): row j minus row i
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def rkd_distance(f_s: Tensor, f_t: Tensor) -> Tensor:
    """RKD distance term, smooth L1 on mean-normalised pairwise distances: (N, ...) x2 -> ()."""
    import torch.nn.functional as F

    s, t = f_s.flatten(1), f_t.detach().flatten(1)
    if s.shape[0] < 2:
        return f_s.sum() * 0.0  # no pair to compare
    return F.smooth_l1_loss(_normalised_distances(s), _normalised_distances(t))


def rkd_angle(f_s: Tensor, f_t: Tensor) -> Tensor:
    """RKD angle term, smooth L1 on the cosines of all triplets: (N, ...) x2 -> ()."""
    import torch.nn.functional as F

    s, t = f_s.flatten(1), f_t.detach().flatten(1)
    return F.smooth_l1_loss(_angles(s), _angles(t))


def rkd_loss(
    f_s: Tensor, f_t: Tensor, distance_weight: float = 25.0, angle_weight: float = 50.0
) -> Tensor:
    """Weighted RKD distance plus angle terms: (N, ...) x2 -> ()."""
    return distance_weight * rkd_distance(f_s, f_t) + angle_weight * rkd_angle(f_s, f_t)


class RKDSettings(BaseModel):
    """RKD's settings; the inner weights are TOML keys only."""

    rkd_weight: float | None = Field(None, ge=0, description="RKD weight (distance 25, angle 50).")
    rkd_distance_weight: float = Field(25.0, ge=0)  # Park et al. 2019
    rkd_angle_weight: float = Field(50.0, ge=0)  # Park et al. 2019


def _build(settings: RKDSettings, context: Context) -> dict[str, Part]:
    dw, aw = settings.rkd_distance_weight, settings.rkd_angle_weight

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        return rkd_loss(out["features"], out["t_features"], dw, aw)

    return {"rkd": Part(term)}


RKD = register(
    Method(
        name="rkd",
        order=20,
        parts=("rkd",),
        settings=RKDSettings,
        preset={"ce_weight": 1.0, "rkd_weight": 1},
        build=_build,
        recorded=("rkd_distance_weight", "rkd_angle_weight"),
        teacher_features=True,
    )
)

# KD's weights (CE 0.1, KD 0.9) with the RKD term added at weight 1
KD_RKD = register(
    Preset("kd+rkd", order=25, preset={"ce_weight": 0.1, "kd_weight": 0.9, "rkd_weight": 1})
)
