"""A checkpoint against a data set: the class check, and eval on the recorded data set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from icckd_cli.base.errors import UsageError
from icckd_cli.commands.evaluation import (
    check_classes,
    checkpoint_channels_last,
    count_params,
    evaluate_checkpoint,
    open_checkpoint,
)
from icckd_cli.data import DataSpec
from tests.helpers import TINY, digits_teacher, icckd

SPEC = DataSpec("digits", 3, ["0", "1", "2"], [0.5], [0.5], 8, False)


@pytest.mark.parametrize(
    ("num_classes", "meta", "says"),
    [
        (4, {}, "predicts 4 classes but data set 'digits' has 3"),
        (3, {"dataset": {"classes": ["a", "b", "c"]}}, "was trained on other classes (a, b, c...)"),
        (3, {"dataset": {"image_size": 32}}, "was trained on 32x32 images but 'digits' has 8x8"),
    ],
)
def test_checkpoint_and_data_set_must_agree(num_classes: int, meta: dict, says: str) -> None:
    with pytest.raises(UsageError) as exc:
        check_classes(SPEC, num_classes, meta, "t.safetensors")
    assert exc.value.message.startswith("t.safetensors ") and says in exc.value.message


def test_matching_checkpoint_passes() -> None:
    check_classes(SPEC, 3, {"dataset": {"classes": ["0", "1", "2"], "image_size": 8}}, "t")


def test_torchvision_class_names_match_ilsvrc_wnid_folders_by_order() -> None:
    wnids = DataSpec("imagenet", 3, ["n01440764", "n01443537", "n01484850"], [0.5], [0.5], 8, True)
    named = {"classes": ["tench", "goldfish", "great white shark"], "image_size": 8}
    check_classes(wnids, 3, {"dataset": {**named, "class_order": "wnid"}}, "t")
    with pytest.raises(UsageError, match="was trained on other classes"):
        check_classes(wnids, 3, {"dataset": named}, "t")  # names alone must still match
    folder = DataSpec("imagefolder", 3, wnids.classes, [0.5], [0.5], 8, True)
    with pytest.raises(UsageError, match="was trained on other classes"):
        check_classes(folder, 3, {"dataset": {**named, "class_order": "wnid"}}, "t")
    with pytest.raises(UsageError, match="predicts 4 classes"):
        check_classes(wnids, 4, {"dataset": {**named, "class_order": "wnid"}}, "t")


def test_eval_reads_the_recorded_data_set_and_subset(tmp_path: Path) -> None:
    subset = {"test_per_class": 2, "train_per_class": 3}
    model = digits_teacher(tmp_path / "t.safetensors", subset)
    got = evaluate_checkpoint(tmp_path / "t.safetensors", device="cpu")
    assert {k: got[k] for k in ("arch", "kind", "dataset", "split")} == {
        "arch": "resnet8",
        "kind": "teacher",
        "dataset": "digits",
        "split": "test",
    }
    assert got["n"] == 20  # the recorded subset: 2 test images x 10 classes
    assert got["params"] == count_params(model) and 0 <= got["top1"] <= got["top5"] <= 100


def test_checkpoints_evaluate_in_the_layout_they_trained_in(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = icckd(capsys, "train-teacher", "--arch", "resnet8", "--epochs", "1",
              "--out", tmp_path / "run", *TINY)  # fmt: skip
    assert r.code == 0, r.err
    model, meta, _, device = open_checkpoint(tmp_path / "run/model.safetensors", None, None,
                                             False, "cpu")  # fmt: skip
    assert checkpoint_channels_last(meta, device)  # channels_last is on by default
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    off = {"config": {"channels_last": False}}
    assert not checkpoint_channels_last(off, device)
    assert checkpoint_channels_last({}, device)  # a .pth teacher records no config
    assert not checkpoint_channels_last({}, torch.device("mps"))  # as training, never on MPS
