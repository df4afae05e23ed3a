"""The learning rate of every step: step decay or a cosine, after an optional warm-up."""

from __future__ import annotations

import math
from dataclasses import dataclass


def lr_at(epoch: int, base: float, decay_epochs: list[int], rate: float) -> float:
    """Multi-step schedule: base * rate ** (number of decay epochs already reached)."""
    return base * rate ** sum(epoch >= e for e in decay_epochs)


@dataclass(frozen=True)
class LrSchedule:
    """The learning rate of every step: a linear warm-up, then step decay or a cosine to 0.

    Set before each step from (epoch, step) alone, so a run resumed mid-epoch continues it
    exactly. Warm-up step g of W (0-based) trains at base x (g + 1) / W; the cosine then runs
    over the remaining steps from base towards 0 (its last step stays above 0).
    """

    base: float
    epochs: int
    steps: int  # per epoch
    decay_epochs: list[int]
    decay_rate: float
    kind: str = "step"  # "step" or "cosine"
    warmup_epochs: int = 0

    def __call__(self, epoch: int, step: int = 0) -> float:
        g, warm = epoch * self.steps + step, self.warmup_epochs * self.steps
        if g < warm:
            peak = self.base if self.kind == "cosine" else self._step(epoch)
            return peak * (g + 1) / warm
        if self.kind == "cosine":
            done = (g - warm) / max(1, self.epochs * self.steps - warm)
            return self.base * 0.5 * (1.0 + math.cos(math.pi * done))
        return self._step(epoch)

    def _step(self, epoch: int) -> float:
        return lr_at(epoch, self.base, self.decay_epochs, self.decay_rate)
