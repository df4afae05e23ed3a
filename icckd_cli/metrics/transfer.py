"""Where distillation made a student worse: negative flips, teacher agreement, worse seeds.

All rates are percentages of the test images, like top-1.

- negative flip rate (Yan et al., "Positive-Congruent Training: Towards Regression-Free Model
  Updates", CVPR 2021): the share of images the student alone classifies right and the
  distilled student wrong;
- agreement (Stanton et al., "Does Knowledge Distillation Really Work?", NeurIPS 2021): the
  share of images on which student and teacher predict the same class, right or wrong;
- kd_worse_seeds: how many seeds the distilled student ends below the student alone trained
  with the same seed.

A run keeps its test predictions in `predictions.npy` (PREDICTIONS_FILE): one predicted label
per test image, in the test split's order, int16 (int32 past 32,767 classes), written
atomically; reading checks the format, shape, dtype and, when given, the image count and the
class range, and refuses anything else in one line that names the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from icckd_cli.base.atomic import atomic_write
from icckd_cli.base.errors import IcckdError, first_line
from icckd_cli.base.npyfile import is_npy

PREDICTIONS_FILE = "predictions.npy"
DTYPES = (np.dtype(np.int16), np.dtype(np.int32))


def _as_labels(x: Any, name: str) -> np.ndarray:
    """A 1-D int64 array of class indices from a tensor, array or list."""
    if hasattr(x, "detach"):  # a torch tensor, wherever it lives
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise ValueError(f"{name}: expected a 1-D integer array, got {a.dtype} {a.shape}")
    return a.astype(np.int64)


def _same_length(*arrays: np.ndarray) -> None:
    sizes = {a.shape[0] for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"predictions of different lengths: {sorted(sizes)}")


def negative_flip_rate(pred_alone: Any, pred_distilled: Any, labels: Any) -> float:
    """% of images (N,) the student alone gets right and the distilled student wrong."""
    alone = _as_labels(pred_alone, "pred_alone")
    distilled = _as_labels(pred_distilled, "pred_distilled")
    true = _as_labels(labels, "labels")
    _same_length(alone, distilled, true)
    if not true.size:
        raise ValueError("no predictions to compare")
    flips = (alone == true) & (distilled != true)
    return 100.0 * float(flips.sum()) / true.size


def agreement(pred_student: Any, pred_teacher: Any) -> float:
    """% of images (N,) on which student and teacher predict the same class."""
    student = _as_labels(pred_student, "pred_student")
    teacher = _as_labels(pred_teacher, "pred_teacher")
    _same_length(student, teacher)
    if not student.size:
        raise ValueError("no predictions to compare")
    return 100.0 * float((student == teacher).sum()) / student.size


def kd_worse_seeds(
    alone_top1_by_seed: Mapping[int, float], distilled_top1_by_seed: Mapping[int, float]
) -> int:
    """How many seeds (of those both have) the distilled student ends strictly below alone."""
    common = alone_top1_by_seed.keys() & distilled_top1_by_seed.keys()
    return sum(1 for s in common if distilled_top1_by_seed[s] < alone_top1_by_seed[s])


def mean_negative_flip_rate(
    alone_by_seed: Mapping[int, Any], distilled_by_seed: Mapping[int, Any], labels: Any
) -> float | None:
    """The negative flip rate averaged over the seeds both have (same seed paired); None if none."""
    common = sorted(alone_by_seed.keys() & distilled_by_seed.keys())
    if not common:
        return None
    rates = [negative_flip_rate(alone_by_seed[s], distilled_by_seed[s], labels) for s in common]
    return sum(rates) / len(rates)


def write_predictions(path: Path, predictions: Any, num_classes: int | None = None) -> None:
    """Save predicted labels (N,) atomically as int16 (int32 past 32,767 classes)."""
    pred = _as_labels(predictions, str(path))
    top = max(num_classes or 0, int(pred.max()) + 1 if pred.size else 0)
    if pred.size and int(pred.min()) < 0:
        raise ValueError(f"{path}: negative class index")
    dtype = np.int16 if top <= np.iinfo(np.int16).max + 1 else np.int32

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append .npy to a name
            np.save(fh, pred.astype(dtype), allow_pickle=False)

    atomic_write(Path(path), write)


def read_predictions(
    path: Path, n: int | None = None, num_classes: int | None = None
) -> np.ndarray:
    """Predicted labels (N,) int64 from a predictions file, checked; IcckdError in one line."""
    path = Path(path)
    fix = "delete it and re-run the run that wrote it"
    if not path.is_file():
        raise IcckdError(f"{path} is missing: the run kept no test predictions; {fix}")
    if not is_npy(path):  # numpy's own message for this talks of unpickling
        raise IcckdError(f"{path} is not a .npy file (damaged or overwritten); {fix}")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        msg = f"{path} is not a readable predictions file ({first_line(exc)}); {fix}"
        raise IcckdError(msg) from exc
    if a.dtype not in DTYPES or a.ndim != 1:
        what = f"{a.dtype} {a.shape}"
        raise IcckdError(f"{path} holds {what}, not one int16/int32 label per image; {fix}")
    if n is not None and a.shape[0] != n:
        raise IcckdError(f"{path} holds {a.shape[0]} predictions for {n} test images; {fix}")
    if a.size and (int(a.min()) < 0 or (num_classes is not None and int(a.max()) >= num_classes)):
        top = "" if num_classes is None else f" or past {num_classes - 1}"
        raise IcckdError(f"{path} holds class indices below 0{top}; {fix}")
    return a.astype(np.int64)
