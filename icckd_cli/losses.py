"""The reference API (METHOD.md): loss functions on tensors, re-exported from where they live.

The intra-class teacher term lives in methods/icc.py, each distillation method in its own
file under methods/ (kd, rkd, dkd, crd, dist), ECE in metrics/calibration.py. Code inside the
package imports from those modules; scripts and notebooks may keep importing from here.
"""

from __future__ import annotations

from icckd_cli.methods.crd import CRDLoss
from icckd_cli.methods.dist import dist_loss
from icckd_cli.methods.dkd import dkd_loss, dkd_parts
from icckd_cli.methods.icc import (
    IntraClassTerms,
    icc_terms,
    intra_class_contrastive,
    margin_gate,
    prediction_margin,
)
from icckd_cli.methods.kd import kd_loss, standardize
from icckd_cli.methods.rkd import rkd_angle, rkd_distance, rkd_loss
from icckd_cli.metrics.calibration import expected_calibration_error

__all__ = [
    "CRDLoss",
    "IntraClassTerms",
    "dist_loss",
    "dkd_loss",
    "dkd_parts",
    "expected_calibration_error",
    "icc_terms",
    "intra_class_contrastive",
    "kd_loss",
    "margin_gate",
    "prediction_margin",
    "rkd_angle",
    "rkd_distance",
    "rkd_loss",
    "standardize",
]
