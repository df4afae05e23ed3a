"""Negative flips, agreement and worse seeds on hand-made predictions; the predictions file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from icckd_cli.base.errors import IcckdError
from icckd_cli.metrics.transfer import (
    PREDICTIONS_FILE,
    agreement,
    kd_worse_seeds,
    mean_negative_flip_rate,
    negative_flip_rate,
    read_predictions,
    write_predictions,
)

LABELS = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
# alone is right at 0, 1, 2, 4, 5, 7, 9; distilled at 0, 2, 3, 5, 6, 7: the distilled student
# loses images 1, 4, 9 (3 negative flips of 10) and gains 3, 6
ALONE = [0, 1, 2, 0, 0, 1, 1, 3, 2, 1]
DISTILLED = [0, 2, 2, 3, 1, 1, 2, 3, 2, 0]


def test_negative_flip_rate_by_hand() -> None:
    assert negative_flip_rate(ALONE, DISTILLED, LABELS) == 30.0
    # the other way round the flips are images 3 and 6
    assert negative_flip_rate(DISTILLED, ALONE, LABELS) == 20.0
    assert negative_flip_rate(ALONE, ALONE, LABELS) == 0.0
    # top-1 may rise while images are lost: 60 % vs 70 % here, yet 30 % flip
    t = torch.tensor
    assert negative_flip_rate(t(ALONE), t(DISTILLED), np.array(LABELS, np.uint8)) == 30.0


def test_agreement_by_hand() -> None:
    # same class at 0, 2, 5, 7, 8: 5 of 10, whether right (0, 2, 5, 7) or wrong (8)
    assert agreement(ALONE, DISTILLED) == 50.0
    assert agreement(ALONE, ALONE) == 100.0
    assert agreement([1, 1], [0, 0]) == 0.0


def test_kd_worse_seeds_counts_strictly_lower_same_seed_runs() -> None:
    alone = {0: 80.0, 1: 82.0, 2: 81.0, 3: 79.0}
    distilled = {0: 79.5, 1: 82.0, 2: 83.0, 4: 10.0}  # seed 1 a tie, seed 4 has no partner
    assert kd_worse_seeds(alone, distilled) == 1
    assert kd_worse_seeds(alone, {}) == 0


def test_mean_flip_rate_pairs_seeds() -> None:
    alone = {0: ALONE, 1: ALONE}
    distilled = {0: DISTILLED, 1: ALONE, 7: DISTILLED}
    assert mean_negative_flip_rate(alone, distilled, LABELS) == 15.0  # (30 + 0) / 2
    assert mean_negative_flip_rate({}, distilled, LABELS) is None


def test_bad_pairs_are_refused() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        negative_flip_rate(ALONE, DISTILLED[:-1], LABELS)
    with pytest.raises(ValueError, match="1-D integer"):
        agreement([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="no predictions"):
        agreement([], [])


def test_flip_rate_from_a_hand_made_pair_of_files(tmp_path: Path) -> None:
    write_predictions(tmp_path / "alone" / PREDICTIONS_FILE, ALONE, num_classes=4)
    write_predictions(tmp_path / "kd" / PREDICTIONS_FILE, torch.tensor(DISTILLED), num_classes=4)
    raw = np.load(tmp_path / "alone" / PREDICTIONS_FILE)
    assert raw.dtype == np.int16 and raw.tolist() == ALONE
    alone = read_predictions(tmp_path / "alone" / PREDICTIONS_FILE, n=10, num_classes=4)
    kd = read_predictions(tmp_path / "kd" / PREDICTIONS_FILE, n=10, num_classes=4)
    assert negative_flip_rate(alone, kd, LABELS) == 30.0
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temporary left


def test_many_classes_are_written_as_int32(tmp_path: Path) -> None:
    write_predictions(tmp_path / "p.npy", [0, 40000], num_classes=50000)
    assert np.load(tmp_path / "p.npy").dtype == np.int32
    assert read_predictions(tmp_path / "p.npy").tolist() == [0, 40000]
    write_predictions(tmp_path / "q.npy", [0, 32767])
    assert np.load(tmp_path / "q.npy").dtype == np.int16


def damaged(path: Path, how: str) -> None:
    """Damage a predictions file in place: truncated, zeroed, random bytes, or emptied."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) - 7])
    elif how == "zeroed":
        path.write_bytes(bytes(len(data)))
    elif how == "random":
        path.write_bytes(os.urandom(len(data)))
    else:
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "zeroed", "random", "empty"])
def test_a_damaged_file_is_refused_in_one_line(tmp_path: Path, how: str) -> None:
    path = tmp_path / PREDICTIONS_FILE
    write_predictions(path, ALONE)
    damaged(path, how)
    with pytest.raises(IcckdError) as info:
        read_predictions(path, n=10)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert message.endswith("delete it and re-run the run that wrote it")


@pytest.mark.parametrize(
    ("array", "n", "classes", "says"),
    [
        (np.zeros(10, np.float32), 10, None, "float32 (10,)"),
        (np.zeros(10, np.int64), 10, None, "int64 (10,)"),
        (np.zeros((2, 5), np.int16), 10, None, "int16 (2, 5)"),
        (np.zeros(9, np.int16), 10, None, "holds 9 predictions for 10 test images"),
        (np.array([0, 4], np.int16), 2, 4, "below 0 or past 3"),
        (np.array([-1, 0], np.int32), 2, None, "below 0;"),
    ],
)
def test_wrong_contents_are_refused(
    tmp_path: Path, array: np.ndarray, n: int, classes: int | None, says: str
) -> None:
    path = tmp_path / PREDICTIONS_FILE
    np.save(path, array)
    with pytest.raises(IcckdError, match=f"{path}.*{says}".replace("(", r"\(").replace(")", r"\)")):
        read_predictions(path, n=n, num_classes=classes)


def test_an_npz_or_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / PREDICTIONS_FILE
    with pytest.raises(IcckdError, match="is missing"):
        read_predictions(path)
    with open(path, "wb") as fh:
        np.savez(fh, a=np.zeros(3, np.int16))
    with pytest.raises(IcckdError, match="is not a .npy file"):
        read_predictions(path)
