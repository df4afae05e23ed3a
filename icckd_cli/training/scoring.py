"""A model's outputs over a split, in order, and the metrics evaluation reports from them.

One pass gives the logits; top-1, top-5, NLL and ECE and any per-class figure are computed from
the same logits, so no caller has to run the model twice over one split.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icckd_cli.data import DataSpec, Split, eval_batches
from icckd_cli.metrics.calibration import expected_calibration_error
from icckd_cli.training.devices import autocast


def predict(
    model: nn.Module,
    split: Split,
    spec: DataSpec,
    batch_size: int = 512,
    channels_last: bool = False,
    precision: str = "fp32",
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """(logits (B, C), features (B, D), labels (B,)) in order, in eval mode, no gradient."""
    was_training = model.training
    model.eval()
    device = split.device
    try:
        with torch.inference_mode(), autocast(device, precision):
            for x, y in eval_batches(split, spec, batch_size, channels_last):
                logits, feats = model(x, return_features=True)
                yield logits.float(), feats.float(), y
    finally:
        model.train(was_training)


def split_logits(
    model: nn.Module,
    split: Split,
    spec: DataSpec,
    batch_size: int = 512,
    channels_last: bool = False,
    precision: str = "fp32",
) -> tuple[Tensor, Tensor]:
    """(logits (N, C), labels (N,)) of a split in order; features are not kept."""
    logits_all, labels_all = [], []
    for logits, _, y in predict(model, split, spec, batch_size, channels_last, precision):
        logits_all.append(logits)
        labels_all.append(y)
    return torch.cat(logits_all), torch.cat(labels_all)


def logit_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """top1/top5 (percent), nll, ece and n: (N, C), (N,) -> dict."""
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    hit = topk == labels[:, None]
    return {
        "top1": 100.0 * hit[:, 0].float().mean().item(),
        "top5": 100.0 * hit.any(dim=1).float().mean().item(),
        "nll": F.cross_entropy(logits, labels).item(),
        "ece": float(expected_calibration_error(logits, labels)),
        "n": int(labels.numel()),
    }
