"""Per-class, balanced and many/medium/few-shot top-1 against hand-counted predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from icckd_cli.metrics.perclass import (
    balanced_top1,
    group_top1,
    per_class_report,
    per_class_top1,
    shot_group,
)

# 4 classes, class 3 never evaluated: class 0 3 of 4 right, class 1 1 of 2, class 2 3 of 3
LABELS = [0, 0, 0, 0, 1, 1, 2, 2, 2]
PREDS = [0, 0, 1, 0, 1, 2, 2, 2, 2]


def test_per_class_top1_by_hand() -> None:
    assert per_class_top1(PREDS, LABELS, 4) == [75.0, 50.0, 100.0, None]
    # tensors, numpy arrays of any integer type and lists agree
    t = per_class_top1(torch.tensor(PREDS), torch.tensor(LABELS), 4)
    a = per_class_top1(np.array(PREDS, np.int16), np.array(LABELS, np.uint8), 4)
    assert t == a == [75.0, 50.0, 100.0, None]


def test_balanced_top1_skips_absent_classes() -> None:
    assert balanced_top1([75.0, 50.0, 100.0, None]) == 75.0
    assert balanced_top1([None, None]) is None
    # 7 of 9 images are right (77.8 %), but the classes average to 75 %
    assert balanced_top1(per_class_top1(PREDS, LABELS, 4)) == pytest.approx(75.0)


def test_shot_group_boundaries_follow_liu_et_al() -> None:
    assert [shot_group(n) for n in (1000, 101, 100, 20, 19, 0)] == [
        "many", "many", "medium", "medium", "few", "few"]  # fmt: skip


def test_groups_with_known_counts() -> None:
    per_class = [75.0, 50.0, 100.0, None]
    # class 0 many; classes 1 and 2 medium (100 and 20 images); class 3 few but not evaluated
    assert group_top1(per_class, [500, 100, 20, 19]) == {"many": 75.0, "medium": 75.0, "few": None}
    # classes 0, 1 many (62.5); no medium class; few: class 2 (100), class 3 not evaluated
    assert group_top1(per_class, [101, 150, 19, 5]) == {"many": 62.5, "medium": None, "few": 100.0}
    with pytest.raises(ValueError, match="4 classes evaluated, 3 counted"):
        group_top1(per_class, [1, 2, 3])


def test_report_is_json_ready_and_adds_groups_only_with_counts() -> None:
    plain = per_class_report(PREDS, LABELS, 4)
    assert plain == {"per_class_top1": [75.0, 50.0, 100.0, None], "balanced_top1": 75.0}
    lt = per_class_report(PREDS, LABELS, 4, train_counts=[200, 60, 12, 3])
    assert lt["train_counts"] == [200, 60, 12, 3]
    assert lt["groups"] == {"many": 75.0, "medium": 50.0, "few": 100.0}
    assert json.loads(json.dumps(lt))["per_class_top1"][3] is None  # null in JSON, not NaN


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        per_class_top1([0, 1, 1], [0, 1], 2)
    with pytest.raises(ValueError, match="labels outside 0..1"):
        per_class_top1([0, 1], [0, 2], 2)
    with pytest.raises(ValueError, match="1-D integer"):
        per_class_top1([0.0, 1.0], [0, 1], 2)
    assert per_class_top1([], [], 2) == [None, None]
