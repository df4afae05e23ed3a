"""Where a student's teacher outputs come from: the frozen teacher run on each batch
(RunTeacher), or the teacher-output store (training/store/), behind one protocol."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn

from icckd_cli.data import Batch


class TeacherSource(Protocol):
    """Where a student's teacher outputs come from: the teacher itself, or a store of them."""

    feature_dim: int

    def __call__(self, batch: Batch, epoch: int) -> tuple[Tensor, Tensor | None]:
        """(teacher logits (B, C), pooled features (B, D) or None) for batch.views[0]."""
        ...

    def train(self, mode: bool = True) -> Any:
        """Follow the objective's train()/eval(); a frozen teacher stays in eval mode."""
        ...


class RunTeacher:
    """The frozen teacher run on each batch (eval mode, no gradient)."""

    def __init__(self, teacher: nn.Module) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.feature_dim = int(getattr(teacher, "feature_dim", 0))

    def __call__(self, batch: Batch, epoch: int) -> tuple[Tensor, Tensor | None]:
        with torch.inference_mode():
            t_logits, t_feats = self.teacher(batch.views[0], return_features=True)
        # clones leave inference mode so autograd may save them for the student's backward
        return t_logits.clone(), t_feats.clone()

    def train(self, mode: bool = True) -> RunTeacher:
        self.teacher.eval()
        return self
