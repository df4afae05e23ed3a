"""Tiny-ImageNet read as its zip unpacks: labels, names, sizes, parallel decoding, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.data import LoadOptions, load_dataset
from icckd_cli.data import decode as decode_module
from tests.helpers import icckd
from tests.imagesets import COLOURS, tiny_imagenet

WNIDS = ["n01443537", "n01629819", "n01641577"]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return tiny_imagenet(tmp_path / "tiny-imagenet-200", WNIDS)


def test_labels_names_and_shapes(tiny: Path) -> None:
    ds = load_dataset("tinyimagenet", tiny)
    # wnids.txt lists them in reverse: labels follow the sorted wnids, names come from words.txt
    assert ds.spec.classes == [f"name of {w}" for w in WNIDS]
    assert (ds.spec.name, ds.spec.num_classes, ds.spec.image_size) == ("tinyimagenet", 3, 64)
    assert ds.spec.flip and ds.spec.mean == [0.4802, 0.4481, 0.3975]
    assert ds.train.images.shape == (9, 3, 64, 64) and ds.train.images.dtype == torch.uint8
    assert ds.test.images.shape == (6, 3, 64, 64)  # val/ is the test split; test/ is ignored
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    for split in (ds.train, ds.test):
        mean = split.images.float().mean(dim=(2, 3))  # (N, 3)
        for m, y in zip(mean, split.labels.tolist(), strict=True):
            if m.max() - m.min() > 5:  # a colour image (the greyscale one is skipped)
                assert (m - torch.tensor(COLOURS[y], dtype=torch.float)).abs().max() < 4


def test_per_class_subsets(tiny: Path) -> None:
    ds = load_dataset("tinyimagenet", tiny, train_per_class=2, test_per_class=1)
    assert ds.train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.test.labels.tolist() == [0, 1, 2]


def test_parallel_decoding_matches_one_process_and_reports_progress(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = load_dataset("tinyimagenet", tiny, options=LoadOptions(workers=1))
    monkeypatch.setenv("ICCKD_CACHE_DIR", str(tmp_path / "fresh-cache"))
    monkeypatch.setattr(decode_module, "PARALLEL_MIN", 0)
    monkeypatch.setattr(decode_module, "CHUNK", 4)
    events: list[dict[str, Any]] = []
    opts = LoadOptions(workers=2, progress=lambda e, i: events.append({"event": e, **i}))
    two = load_dataset("tinyimagenet", tiny, options=opts)
    assert torch.equal(one.train.images, two.train.images)
    assert torch.equal(one.test.images, two.test.images)
    warned = [e["message"] for e in events if e["event"] == "warning"]
    assert warned == [  # one training image a class is 80x80 (tests/imagesets.py)
        "3 of the 9 Tiny-ImageNet train JPEGs are not 64x64 pixels; they were resized "
        "(stretched, bilinear) to 64x64"
    ]
    events = [e for e in events if e["event"] != "warning"]
    whats = sorted({e["what"] for e in events})
    assert whats == [
        "decoding 6 Tiny-ImageNet val JPEGs in 2 processes",
        "decoding 9 Tiny-ImageNet train JPEGs in 2 processes",
    ]
    train = [e["done"] for e in events if "train" in e["what"]]
    assert train == [0, 4, 8, 9] and all(e["event"] == "decode" for e in events)


def test_progress_display_shows_one_bar_per_decoding_pass() -> None:
    from icckd_cli.presentation.progress import TrainingProgress

    progress = TrainingProgress("teacher resnet8")
    what = "decoding 9 Tiny-ImageNet train JPEGs in 2 processes"
    progress("decode", {"what": what, "done": 0, "total": 9})
    assert progress.decode is not None
    assert progress.decode.tasks[0].description == what
    progress("decode", {"what": what, "done": 4, "total": 9})
    assert progress.decode.tasks[0].completed == 4
    progress("decode", {"what": what, "done": 9, "total": 9})
    assert progress.decode is None  # gone once the pass is done; training's bar comes next


def test_missing_val_annotations(tiny: Path) -> None:
    (tiny / "val" / "val_annotations.txt").unlink()
    with pytest.raises(UsageError) as err:
        load_dataset("tinyimagenet", tiny)
    assert err.value.message == (
        f"{tiny}/val/val_annotations.txt is missing: it labels the validation images; point "
        "--data-dir at tiny-imagenet-200/ exactly as its zip unpacks"
    )


def test_wnid_absent_from_wnids(tiny: Path) -> None:
    ann = tiny / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_99.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(UsageError) as err:
        load_dataset("tinyimagenet", tiny)
    assert err.value.message == (
        f"{ann} line 7 labels val_99.JPEG with n99999999, a wnid absent from "
        f"{tiny}/wnids.txt; fix one of the two files"
    )
    ann.write_text("")
    (tiny / "train" / "n02000000" / "images").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"train/n02000000 is a class folder whose wnid is absent"):
        load_dataset("tinyimagenet", tiny)


def test_empty_splits(tiny: Path) -> None:
    ann = tiny / "val" / "val_annotations.txt"
    ann.write_text("\n")
    with pytest.raises(UsageError) as err:
        load_dataset("tinyimagenet", tiny)
    assert err.value.message == f"{ann} labels no images; the validation split is empty"
    for f in (tiny / "train").glob("*/images/*.JPEG"):
        f.unlink()
    with pytest.raises(UsageError) as err:
        load_dataset("tinyimagenet", tiny)
    assert err.value.message == (
        f"{tiny}/train holds no images (train/<wnid>/images/*.JPEG); the split is empty"
    )


def test_unreadable_jpeg_is_named(tiny: Path) -> None:
    bad = tiny / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_1.JPEG"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(IcckdError, match=r"^cannot read image .*_1\.JPEG \(.*\); remove or"):
        load_dataset("tinyimagenet", tiny)


def test_cli_reports_layout_errors_in_one_line(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tiny / "wnids.txt").unlink()
    r = icckd(capsys, "train-teacher", "--dataset", "tinyimagenet", "--data-dir", str(tiny),
              "--arch", "resnet8", "--out", str(tmp_path / "run"), "--device", "cpu")  # fmt: skip
    assert r.code == 2
    assert r.err.strip() == (
        f"error: {tiny}/wnids.txt is missing: it lists the 200 class ids; point --data-dir at "
        "tiny-imagenet-200/ exactly as its zip unpacks"
    )
