"""Mixup on whole batches (Zhang et al., ICLR 2018), the view teacher and student share.

One lam ~ Beta(alpha, alpha) per batch, as in Zhang et al.'s implementation: every image of
the batch becomes lam * x_i + (1 - lam) * x_perm(i). The mixed view is the one the teacher
labels and the student learns from, the "consistent teaching" of function matching (Beyer
et al., "Knowledge distillation: A good teacher is patient and consistent", CVPR 2022). The
draw is seeded by (seed, epoch, step), so a resumed epoch mixes its batches as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from icckd_cli.data.device import Batch

MIX_SALT = 20180225  # keeps the mixup stream apart from the loader's own draws


def mix_draw(alpha: float, size: int, seed: int, epoch: int, step: int) -> tuple[float, Tensor]:
    """(lam, perm (size,)) of one batch: lam ~ Beta(alpha, alpha), perm a shuffle of 0..size-1."""
    rng = np.random.default_rng([MIX_SALT, seed, epoch, step])
    lam = float(rng.beta(alpha, alpha))
    return lam, torch.from_numpy(rng.permutation(size))


def mix_views(views: list[Tensor], lam: float, perm: Tensor) -> list[Tensor]:
    """Each view (B, 3, H, W) as lam * x + (1 - lam) * x[perm]."""
    perm = perm.to(views[0].device)
    return [x * lam + x[perm] * (1.0 - lam) for x in views]


class MixupLoader:
    """A training loader whose batches come mixed; everything else is the wrapped loader's."""

    def __init__(self, loader: Any, alpha: float, seed: int) -> None:
        self.loader, self.alpha, self.seed = loader, alpha, seed

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)  # world, split, spec ... of the wrapped loader

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """The wrapped loader's batches of `epoch`, each mixed by its own draw."""
        for step, batch in enumerate(self.loader.epoch(epoch, start_step), start_step):
            lam, perm = mix_draw(self.alpha, len(batch.labels), self.seed, epoch, step)
            perm = perm.to(batch.labels.device)
            yield replace(batch, views=mix_views(batch.views, lam, perm), mix=(lam, perm))
