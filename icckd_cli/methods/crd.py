"""Contrastive representation distillation: heads, memory banks, NCE.

Tian, Krishnan and Isola, "Contrastive Representation Distillation", ICLR 2020. CIFAR-100
setting (the paper's Sec. 4 and its code's defaults): CE 1 with the CRD term at 0.8, a
128-d embedding, 16384 negatives, NCE temperature 0.07, memory momentum 0.5. The module
itself (CRDLoss, nce_criterion) is in crd_nce.py, imported when CRD runs, so the settings
load without torch; both names stay importable from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from icckd_cli.methods.registry import Context, Method, Part, register

if TYPE_CHECKING:
    from torch import Tensor

    from icckd_cli.methods.crd_nce import CRDLoss, nce_criterion

__all__ = ["CRDLoss", "CRDSettings", "nce_criterion"]


def __getattr__(name: str) -> Any:
    """CRDLoss and nce_criterion, from crd_nce.py on first use (it imports torch)."""
    if name in ("CRDLoss", "nce_criterion"):
        from icckd_cli.methods import crd_nce

        return getattr(crd_nce, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CRDSettings(BaseModel):
    """CRD's settings (Tian et al. 2020, CIFAR-100); the momentum is a TOML key only."""

    crd_weight: float | None = Field(None, ge=0, description="CRD weight.")
    crd_feat_dim: int = Field(128, ge=1, description="CRD embedding size.")
    crd_nce_k: int = Field(16384, ge=1, description="CRD negatives per anchor.")
    crd_temperature: float = Field(0.07, gt=0, description="CRD temperature.")
    crd_momentum: float = Field(0.5, ge=0, lt=1)


def _build(settings: CRDSettings, context: Context) -> dict[str, Part]:
    from icckd_cli.methods.crd_nce import CRDLoss

    crd = CRDLoss(
        context.feature_dim,
        context.teacher_feature_dim,
        context.train_size,
        feat_dim=settings.crd_feat_dim,
        nce_k=settings.crd_nce_k,
        nce_t=settings.crd_temperature,
        momentum=settings.crd_momentum,
    )

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        return crd(out["features"], out["t_features"], out["batch"].index)

    return {"crd": Part(term, module=crd)}


CRD = register(
    Method(
        name="crd",
        order=40,
        parts=("crd",),
        settings=CRDSettings,
        preset={"ce_weight": 1.0, "crd_weight": 0.8},
        build=_build,
        teacher_features=True,
    )
)
