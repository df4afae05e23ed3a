"""Neuron selectivity transfer (Huang and Wang, "Like What You Like: Knowledge Distill via
Neuron Selectivity Transfer", 2017): squared MMD with the polynomial kernel (x . y)^2 between
the L2-normalised per-channel spatial activations of student and teacher, summed over the
stages (RepDistiller's distiller_zoo/NST.py, full loss, on feat[1:-1]). Defaults
(RepDistiller's train_student.py, `-b 50`; mdistiller NST.LOSS.FEAT_WEIGHT 50): CE 1 and
NST 50.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from icckd_cli.methods.feature_maps import FeatureLayers, match_sizes, same_count, stage_pair
from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:
    from torch import Tensor


def _poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    """(B, Ca, N), (B, Cb, N) -> (B, Cb, Ca): (a_i . b_j)^2."""
    return (b @ a.transpose(1, 2)).pow(2)


def nst_map_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """mean k(t, t) + mean k(s, s) - 2 mean k(s, t): (B, C_s, H, W), (B, C_t, H', W') -> ()."""
    import torch.nn.functional as F

    s, t = match_sizes(f_s, f_t.detach())
    s = F.normalize(s.flatten(2), dim=2)
    t = F.normalize(t.flatten(2), dim=2)
    return _poly_kernel(t, t).mean() + _poly_kernel(s, s).mean() - 2 * _poly_kernel(s, t).mean()


def nst_loss(g_s: Sequence[Tensor], g_t: Sequence[Tensor]) -> Tensor:
    """Sum over paired maps of nst_map_loss: -> ()."""
    total: Tensor | float = 0.0
    for s, t in zip(g_s, g_t, strict=True):
        total = total + nst_map_loss(s, t)
    assert not isinstance(total, float)
    return total


class NSTSettings(FeatureLayers):
    """NST's settings (Huang and Wang 2017, as the CRD benchmark runs it)."""

    nst_weight: float | None = Field(None, ge=0, description="NST weight.")


def _build(settings: NSTSettings, context: Context) -> dict[str, Part]:
    student, teacher = stage_pair(context)
    same_count("nst", student.maps[1:], teacher.maps[1:])

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        return nst_loss(out["stages"].maps[1:], out["t_stages"].maps[1:])

    return {"nst": Part(term)}


NST = register(
    Method(
        name="nst",
        order=78,
        parts=("nst",),
        settings=NSTSettings,
        preset={"ce_weight": 1.0, "nst_weight": 50},
        build=_build,
        stages=True,
    )
)


# KD added as the CRD benchmark combines it (RepDistiller's README: `-a 1` beside the method's
# `-b`, CE 1): CE 1, KD 1
KD_NST = register(
    Preset("kd+nst", order=79, preset={"ce_weight": 1.0, "kd_weight": 1.0, "nst_weight": 50})
)
