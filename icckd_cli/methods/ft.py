"""Factor transfer (Kim et al., "Paraphrasing Complex Network: Network Compression via
Factor Transfer", NeurIPS 2018): a paraphraser (three 3x3 convs with leaky ReLUs, factor
k = 0.5 of the teacher's channels, and a mirrored transposed decoder) is first trained to
reconstruct the teacher's last map (MSE) in a preliminary stage of 30 epochs; then a
translator maps the student's last map to factors, matched to the paraphraser's teacher
factors by the mean absolute difference of their L2-normalised channel means of f^2
(RepDistiller's distiller_zoo/FT.py, models/util.py Paraphraser and Translator, helper/
pretrain.py; feat[-2]). Defaults (RepDistiller's train_student.py, `-b 200`): CE 1 and FT 200.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from icckd_cli.methods.feature_maps import FeatureLayers, match_sizes, scaled_setting, stage_pair
from icckd_cli.methods.registry import Context, Method, Part, Preset, register

if TYPE_CHECKING:
    from torch import Tensor, nn

INIT_EPOCHS, RATE = 30, 0.5  # RepDistiller's --init_epochs and the factor k


def factor(f: Tensor, p1: float = 2.0) -> Tensor:
    """(B, C, H, W) -> (B, H * W): mean over channels of f^p1, each row of unit L2 norm."""
    import torch.nn.functional as F

    return F.normalize(f.pow(p1).mean(1).flatten(1))


def ft_loss(factor_s: Tensor, factor_t: Tensor) -> Tensor:
    """Mean absolute difference of the two factors (p1 2, p2 1): (B, k, H, W) x2 -> ()."""
    s, t = match_sizes(factor_s, factor_t.detach())
    return (factor(s) - factor(t)).abs().mean()


def _encoder(c_in: int, c_out: int, bn: bool) -> nn.Sequential:
    from torch import nn

    layers: list[nn.Module] = []
    for i, o in ((c_in, c_in), (c_in, c_out), (c_out, c_out)):
        layers += [nn.Conv2d(i, o, 3, 1, 1), nn.BatchNorm2d(o) if bn else nn.Sequential()]
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


def paraphraser(t_c: int, rate: float = RATE) -> nn.Module:
    """`encoder` (C_t -> k C_t factors) and `decoder` (back to C_t), no BN (use_bn=False)."""
    from torch import nn

    k = int(t_c * rate)
    layers: list[nn.Module] = []
    for i, o in ((k, k), (k, t_c), (t_c, t_c)):
        layers += [nn.ConvTranspose2d(i, o, 3, 1, 1), nn.Sequential(), nn.LeakyReLU(0.1)]
    return nn.ModuleDict({"encoder": _encoder(t_c, k, bn=False), "decoder": nn.Sequential(*layers)})


def translator(s_c: int, t_c: int, rate: float = RATE) -> nn.Module:
    """The student's map (C_s) to k C_t factors, with BN (Translator's use_bn=True)."""
    return _encoder(s_c, int(t_c * rate), bn=True)


def reconstruction_loss(module: nn.Module, f_t: Tensor) -> Tensor:
    """The paraphraser's preliminary-stage loss: MSE of its reconstruction of f_t -> ()."""
    import torch.nn.functional as F

    parts: Any = module
    target = f_t.detach()
    return F.mse_loss(parts["decoder"](parts["encoder"](target)), target)


class FTSettings(FeatureLayers):
    """FT's settings (Kim et al. 2018, as the CRD benchmark runs it)."""

    ft_weight: float | None = Field(None, ge=0, description="FT weight.")
    ft_init_epochs: int | None = Field(
        None, ge=0, description="FT paraphraser epochs (30 of 240, scaled)."
    )


def _build(settings: FTSettings, context: Context) -> dict[str, Part]:
    import torch
    from torch import nn

    student, teacher = stage_pair(context)
    s_c, t_c = student.maps[-1][0], teacher.maps[-1][0]
    modules = nn.ModuleDict({"paraphraser": paraphraser(t_c), "translator": translator(s_c, t_c)})
    para: Any = modules["paraphraser"]

    def preliminary(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        return reconstruction_loss(para, out["t_stages"].maps[-1])

    def term(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        with torch.no_grad():  # the paraphraser is trained in the preliminary stage only
            factor_t = para["encoder"](out["t_stages"].maps[-1])
        return ft_loss(modules["translator"](out["stages"].maps[-1]), factor_t)

    return {"ft": Part(term, module=modules, preliminary=preliminary)}


FT = register(
    Method(
        name="ft",
        order=74,
        parts=("ft",),
        settings=FTSettings,
        preset={"ce_weight": 1.0, "ft_weight": 200},
        build=_build,
        recorded=("ft_init_epochs",),
        stages=True,
        resolve=scaled_setting("ft_init_epochs", INIT_EPOCHS),
        preliminary=lambda settings: settings.ft_init_epochs,
        preliminary_eval=True,  # helper/pretrain.py: model_s.eval(), only the paraphraser trains
    )
)


# KD added as the CRD benchmark combines it (RepDistiller's README: `-a 1` beside the method's
# `-b`, CE 1): CE 1, KD 1
KD_FT = register(
    Preset("kd+ft", order=75, preset={"ce_weight": 1.0, "kd_weight": 1.0, "ft_weight": 200})
)
