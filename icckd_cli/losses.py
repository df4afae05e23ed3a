"""The reference API (docs/method.md): the intra-class loss functions on tensors.

`prediction_margin` (Eq. 3) and `intra_class_contrastive` (Eq. 2 and 4) are the package's
public, stable loss API; they live in methods/icc.py beside the gate the teacher's
objective uses. Each distillation method's loss is in its own file under methods/.
"""

from __future__ import annotations

from icckd_cli.methods.icc import intra_class_contrastive, prediction_margin

__all__ = ["intra_class_contrastive", "prediction_margin"]
