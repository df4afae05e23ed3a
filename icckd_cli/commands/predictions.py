"""A finished run's test predictions: predictions.npy beside model.safetensors.

One predicted label per test image in the test split's order (metrics/transfer.py's format),
from the final model, so an experiment can count negative flips and teacher agreement later
without running any model again.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from icckd_cli.data import Dataset
from icckd_cli.metrics.transfer import PREDICTIONS_FILE, write_predictions
from icckd_cli.settings.config import RunOptions
from icckd_cli.training.scoring import split_logits


def test_predictions(
    model: nn.Module, data: Dataset, batch_size: int = 512, channels_last: bool = False
) -> torch.Tensor:
    """Predicted labels (N,) of the test split, in order (eval mode, no gradient)."""
    logits, _ = split_logits(model, data.test, data.spec, batch_size, channels_last)
    return logits.argmax(dim=1).cpu()


def save_test_predictions(
    out: Path,
    model: nn.Module,
    data: Dataset,
    cfg: RunOptions,
    channels_last: bool,
    known: torch.Tensor | None = None,
) -> Path | None:
    """Write OUT/predictions.npy of the final model on the test split; its path (None for a
    run that never reads its test split). known: those predictions when the last epoch's
    evaluation kept them (the trainer's test_predictions); None runs the model over the split.
    """
    if data.test is None:
        return None
    pred = (
        known
        if known is not None
        else test_predictions(model, data, cfg.eval_batch_size, channels_last)
    )
    path = Path(out) / PREDICTIONS_FILE
    write_predictions(path, pred, data.spec.num_classes)
    return path
