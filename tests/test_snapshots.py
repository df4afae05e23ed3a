"""training/snapshots.py: a teacher's weights per evaluated epoch, saved, listed, read, damaged."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import pytest
import torch

from icckd_cli.base.checkpoint import read_metadata, weights_hash
from icckd_cli.base.errors import IcckdError
from icckd_cli.models import create_model
from icckd_cli.models.loading import load_any_model
from icckd_cli.training.snapshots import (
    clear_snapshots,
    list_snapshots,
    read_snapshot,
    save_snapshot,
    snapshot_curve,
    snapshot_epoch,
    snapshot_path,
)

META = {
    "kind": "teacher",
    "arch": "resnet8",
    "num_classes": 10,
    "seed": 0,
    "dataset": {"name": "digits", "classes": [str(i) for i in range(10)], "image_size": 32},
    "config": {"lr": 0.05, "epochs": 3},
}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet8", 10)


@pytest.fixture
def saved(tmp_path: Path, model: torch.nn.Module) -> Path:
    """A run folder with snapshots of epochs 1, 2 and 3."""
    for epoch, val in ((1, 41.5), (2, 0.1 + 0.2), (3, 100 * 7 / 30)):
        save_snapshot(tmp_path, epoch, model, val, META)
    return tmp_path


def test_save_list_read_round_trip(saved: Path, model: torch.nn.Module) -> None:
    assert snapshot_path(saved, 7) == saved / "epochs" / "epoch-007.safetensors"
    assert snapshot_path(saved, 1234).name == "epoch-1234.safetensors"
    assert list_snapshots(saved) == [(e, snapshot_path(saved, e)) for e in (1, 2, 3)]
    # floats come back exactly as recorded (matching compares them with >=)
    assert snapshot_curve(saved) == [(1, 41.5), (2, 0.1 + 0.2), (3, 100 * 7 / 30)]
    snap = read_snapshot(snapshot_path(saved, 2))
    assert (snap.epoch, snap.val_top1) == (2, 0.1 + 0.2)
    assert snap.weights_sha256 == weights_hash(model.state_dict())
    # a full checkpoint: it loads as a teacher with the run's metadata, and says its epoch
    loaded, meta = load_any_model(snapshot_path(saved, 3))
    assert loaded.arch == "resnet8"
    assert weights_hash(loaded.state_dict()) == weights_hash(model.state_dict())
    assert meta["kind"] == "teacher" and meta["dataset"] == META["dataset"]
    assert snapshot_epoch(meta) == {"epoch": 3, "val_top1": 100 * 7 / 30}
    assert snapshot_epoch(META) is None
    assert not list((saved / "epochs").glob(".*")), "no temporary file left behind"


def test_size_is_the_weights_plus_a_small_header(saved: Path, model: torch.nn.Module) -> None:
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert weights == 314_928  # resnet8, 10 classes
    size = snapshot_path(saved, 1).stat().st_size
    assert weights < size < weights + 20_000


def test_a_moved_run_folder_still_reads(
    saved: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    moved = tmp_path_factory.mktemp("elsewhere") / "run"
    shutil.move(str(saved), moved)
    assert [e for e, _ in snapshot_curve(moved)] == [1, 2, 3]
    load_any_model(snapshot_path(moved, 2))


def test_overwrite_of_an_epoch_replaces_it(saved: Path, model: torch.nn.Module) -> None:
    save_snapshot(saved, 2, model, 55.0, META)
    assert snapshot_curve(saved)[1] == (2, 55.0)


def test_clear_snapshots(saved: Path) -> None:
    assert clear_snapshots(saved, after=1) == 2  # a resume from epoch 1
    assert [e for e, _ in list_snapshots(saved)] == [1]
    assert clear_snapshots(saved) == 1  # a fresh start
    assert list_snapshots(saved) == [] and clear_snapshots(saved / "none") == 0


def test_other_files_are_not_snapshots(saved: Path) -> None:
    (saved / "epochs" / ".epoch-004.safetensors.abc.tmp").write_bytes(b"half")
    (saved / "epochs" / "epoch-5.safetensors").write_bytes(b"x")
    (saved / "epochs" / "notes.txt").write_text("x")
    assert [e for e, _ in list_snapshots(saved)] == [1, 2, 3]


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _zero(p: Path) -> None:
    p.write_bytes(bytes(p.stat().st_size))


def _random(p: Path) -> None:
    p.write_bytes(random.Random(0).randbytes(p.stat().st_size))


def _empty(p: Path) -> None:
    p.write_bytes(b"")


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_truncate, "is truncated"),
        (_zero, "is not a safetensors file"),
        (_random, ""),  # which check fires depends on the bytes; one line either way
        (_empty, "is empty"),
    ],
)
def test_damaged_file_refused_in_one_line(saved: Path, damage, says: str) -> None:
    path = snapshot_path(saved, 2)
    damage(path)
    for read in (read_snapshot, load_any_model):
        with pytest.raises(IcckdError) as err:
            read(path)
        assert says in err.value.message and "\n" not in err.value.message
        assert str(path) in err.value.message
    with pytest.raises(IcckdError):
        snapshot_curve(saved)


def test_damaged_weights_refused(saved: Path) -> None:
    # bytes flipped inside the tensors: the header is intact, the digest of the data is not
    path = snapshot_path(saved, 3)
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 64, len(data)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    assert read_snapshot(path).epoch == 3  # the header alone cannot tell
    with pytest.raises(IcckdError) as err:
        load_any_model(path)
    assert err.value.message == (
        f"{path} is damaged: its tensor data does not match the digest recorded when it was "
        "written; re-create it or use another checkpoint"
    )


def test_renamed_snapshot_refused(saved: Path) -> None:
    os.replace(snapshot_path(saved, 3), snapshot_path(saved, 9))
    with pytest.raises(IcckdError, match="holds epoch 3, not the epoch its name says"):
        read_snapshot(snapshot_path(saved, 9))


def test_a_model_checkpoint_is_not_a_snapshot(tmp_path: Path, model: torch.nn.Module) -> None:
    from icckd_cli.base.checkpoint import save_model

    path = snapshot_path(tmp_path, 1)
    save_model(path, model, META)
    assert read_metadata(path)["kind"] == "teacher"
    with pytest.raises(IcckdError, match="is not an epoch snapshot"):
        read_snapshot(path)
    for extra in (["x"], {"snapshot": "x"}, {"snapshot": {"epoch": 1}}):
        save_model(path, model, {**META, "extra": extra})
        with pytest.raises(IcckdError, match="is not an epoch snapshot"):
            read_snapshot(path)
        want = {"epoch": 1, "val_top1": None} if extra == {"snapshot": {"epoch": 1}} else None
        assert snapshot_epoch(read_metadata(path)) == want


@pytest.mark.parametrize(("epoch", "val", "says"), [
    (0, 50.0, "whole number >= 1 (got 0)"),
    (True, 50.0, "whole number >= 1 (got True)"),
    (2, float("nan"), "validation top-1 of nan"),
])  # fmt: skip
def test_bad_save_refused(tmp_path: Path, model: torch.nn.Module, epoch, val, says) -> None:
    with pytest.raises(IcckdError) as err:
        save_snapshot(tmp_path, epoch, model, val, META)
    assert says in err.value.message
    assert list_snapshots(tmp_path) == []


def test_a_snapshot_whose_weights_changed_after_it_was_recorded_is_refused(
    saved: Path, model: torch.nn.Module
) -> None:
    from icckd_cli.base.checkpoint import Checkpoint, save_tensors
    from icckd_cli.commands.experiment.matched.snapshots import teacher_snapshot

    path = snapshot_path(saved, 2)
    ckpt = Checkpoint.read(path)
    assert teacher_snapshot(ckpt, weights_hash(model.state_dict())) == {
        "epoch": 2,
        "val_top1": 0.1 + 0.2,
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    # other weights written under the same header, with a digest of their own: the file
    # reads whole, and only the weights' hash recorded when the snapshot was taken tells
    torch.manual_seed(1)
    other = create_model("resnet8", 10).state_dict()
    save_tensors(path, other, read_metadata(path))
    changed = Checkpoint.read(path)
    assert changed.extra["snapshot"]["weights_sha256"] == weights_hash(model.state_dict())
    with pytest.raises(IcckdError) as err:
        teacher_snapshot(changed, weights_hash(other))
    assert err.value.message == (
        f"{path}: its weights differ from those saved (the hash recorded in it does not "
        "match); it is damaged: delete it and rerun the teacher"
    )
    # a teacher that is no snapshot records nothing of one, whatever its weights' hash
    from icckd_cli.base.checkpoint import save_model

    save_model(saved / "model.safetensors", model, META)
    assert teacher_snapshot(Checkpoint.read(saved / "model.safetensors"), "x" * 64) == {}
