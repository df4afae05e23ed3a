"""Calibration: expected calibration error over equal-width confidence bins."""

from __future__ import annotations

import torch
from torch import Tensor


def expected_calibration_error(logits: Tensor, labels: Tensor, n_bins: int = 15) -> Tensor:
    """ECE in [0, 1] over equal-width confidence bins (lo, hi]: (N, C), (N,) -> ()."""
    p = logits.detach().float().softmax(dim=1)
    conf, pred = p.max(dim=1)
    correct = (pred == labels.to(p.device)).float()
    edges = torch.linspace(0, 1, n_bins + 1, device=p.device)
    # right=False puts a confidence equal to an inner edge into the lower bin, as (lo, hi] wants
    bins = torch.bucketize(conf, edges[1:-1])
    count = torch.zeros(n_bins, device=p.device).index_add_(0, bins, torch.ones_like(conf))
    gap = torch.zeros(n_bins, device=p.device).index_add_(0, bins, conf - correct)
    # |sum(conf - acc)| / N per bin equals weight_b * |conf_b - acc_b|
    return gap.abs().sum() / count.sum().clamp(min=1)
