"""Cross-entropy on the labelled images of a batch, mixup's pairs included.

A hidden label is -1 (data/unlabeled.py). Each image i of a batch mixed as
lam * x_i + (1 - lam) * x_perm(i) carries two targets: y_i with weight lam and y_perm(i)
with weight 1 - lam (Zhang et al., ICLR 2018); a target whose label is hidden drops out,
so a labelled image mixed with an unlabelled one counts by its own weight alone. The loss is
the weighted sum of the cross-entropies over the summed weights of the labelled targets
(with no hidden label this is mixup's lam * CE(y) + (1 - lam) * CE(y[perm]); unmixed, the
mean CE over the labelled images); a batch without any labelled target adds 0.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor


def targets(labels: Tensor, mix: tuple[float, Tensor] | None) -> list[tuple[float, Tensor]]:
    """(weight, labels (B,)) of each target an image of the batch carries."""
    if mix is None:
        return [(1.0, labels)]
    lam, perm = mix
    return [(lam, labels), (1.0 - lam, labels[perm])]


def labelled_ce(out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
    """Weighted CE over the labelled targets of the batch (logits (B, C), known (B,))."""
    logits = out["logits"]
    num = logits.new_zeros(())
    den = logits.new_zeros(())
    for weight, y in targets(out["known"], out["batch"].mix):
        seen = (y >= 0).to(logits.dtype)
        ce = F.cross_entropy(logits, y.clamp_min(0), reduction="none")  # (B,)
        num = num + weight * (ce * seen).sum()
        den = den + weight * seen.sum()
    return num / den.clamp_min(1e-12)
