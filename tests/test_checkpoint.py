"""safetensors checkpoints: metadata, atomic writes, `.pth` imports, damaged files."""

from __future__ import annotations

import argparse
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from icckd_cli import __version__
from icckd_cli.base.atomic import atomic_write, write_text_atomic
from icckd_cli.base.checkpoint import (
    FORMAT_VERSION,
    read_metadata,
    save_model,
    save_tensors,
    weights_hash,
)
from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.models import create_model
from icckd_cli.models.loading import load_any_model, read_pth_state

META = {
    "kind": "teacher",
    "arch": "resnet8",
    "num_classes": 10,
    "seed": 3,
    "dataset": {"name": "digits", "classes": [str(i) for i in range(10)], "image_size": 32},
    "config": {"lr": 0.05, "lr_decay_epochs": [6, 8, 9], "data_dir": None},
    "metrics": {"final": {"top1": 97.5}},
}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet8", 10)


def test_metadata_round_trip(model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_model(path, model, META)
    meta = read_metadata(path)
    assert meta == {
        **META,
        "format": "icckd",
        "format_version": FORMAT_VERSION,
        "versions": {"icckd": __version__, "torch": torch.__version__},
    }
    loaded, meta2 = load_any_model(path)
    assert meta2 == meta and loaded.arch == "resnet8"
    assert weights_hash(loaded.state_dict()) == weights_hash(model.state_dict())


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_text_atomic(path, "first\n")
    write_text_atomic(path, "second\n")
    assert path.read_text() == "second\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]

    # a write that fails half-way leaves the old file as it was, and no temporary beside it
    def half(p: Path) -> None:
        p.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, half)
    assert path.read_text() == "second\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_written_files_get_the_usual_permissions(model: torch.nn.Module, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        save_model(tmp_path / "m.safetensors", model, META)
        write_text_atomic(tmp_path / "c.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c.json").stat().st_mode & 0o777 == 0o644


def test_pth_import_unwraps_and_strips_data_parallel_prefix(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model": state, "epoch": 240}, tmp_path / "ckpt_epoch_240.pth")
    assert read_pth_state(tmp_path / "ckpt_epoch_240.pth").keys() == model.state_dict().keys()
    loaded, meta = load_any_model(tmp_path / "ckpt_epoch_240.pth", arch="resnet8")
    assert meta == {} and loaded.num_classes == 10  # the head's size, read from the weights
    assert weights_hash(loaded.state_dict()) == weights_hash(model.state_dict())


def test_pth_with_pickled_objects_is_refused(model: torch.nn.Module, tmp_path: Path) -> None:
    # some training scripts pickle their argparse options beside the weights
    opt = argparse.Namespace(lr=0.05)
    torch.save({"model": model.state_dict(), "opt": opt}, tmp_path / "t.pth")
    with pytest.raises(IcckdError, match="never unpickles code"):
        read_pth_state(tmp_path / "t.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 64)
    with pytest.raises(IcckdError, match="not a readable PyTorch .pth file"):
        read_pth_state(tmp_path / "junk.pth")


def test_pth_of_another_architecture(model: torch.nn.Module, tmp_path: Path) -> None:
    torch.save(model.state_dict(), tmp_path / "t.pth")
    with pytest.raises(IcckdError, match=r"does not fit a resnet14 with 10 classes: \d+ missing"):
        load_any_model(tmp_path / "t.pth", arch="resnet14")


def test_architecture_asked_for_must_match(model: torch.nn.Module, tmp_path: Path) -> None:
    save_model(tmp_path / "m.safetensors", model, META)
    load_any_model(tmp_path / "m.safetensors", arch="ResNet8")  # any spelling of the name
    with pytest.raises(UsageError, match="not the resnet20 asked for with --teacher-arch"):
        load_any_model(tmp_path / "m.safetensors", arch="resnet20")


def test_damaged_files_are_rejected(model: torch.nn.Module, tmp_path: Path) -> None:
    good_path = tmp_path / "good.safetensors"
    save_model(good_path, model, META)
    good = good_path.read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    cases = {
        "empty": (b"", "is empty"),
        "short": (good[:6], "too short"),
        "header": (good[: 8 + n // 2], "its header alone needs"),
        "data": (good[:-100], "while its header describes"),
        "oversized": (struct.pack("<Q", 2**31) + b"{" + b" " * 16, "over the"),
        "json": (good[:8] + b"{" + b"x" * (n - 1) + good[8 + n :], "damaged header"),
        "text": (b"just some text, no checkpoint\n", "is not a safetensors file"),
    }
    for name, (content, says) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        with pytest.raises(IcckdError, match=says):
            read_metadata(path)
        with pytest.raises(IcckdError, match=says):
            load_any_model(path)


def test_foreign_or_newer_files_are_rejected(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, str(tmp_path / "hf.safetensors"))
    with pytest.raises(IcckdError, match="has no icckd metadata"):
        read_metadata(tmp_path / "hf.safetensors")
    meta = {"format": "icckd", "format_version": str(FORMAT_VERSION + 1)}
    save_file({"w": torch.zeros(2)}, str(tmp_path / "new.safetensors"), metadata=meta)
    with pytest.raises(IcckdError, match="upgrade icckd"):
        read_metadata(tmp_path / "new.safetensors")
    torch.save({"w": torch.zeros(2)}, tmp_path / "pickle.safetensors")
    with pytest.raises(IcckdError, match=r"is a PyTorch pickle \(\.pth\) file"):
        read_metadata(tmp_path / "pickle.safetensors")


def test_missing_file_and_folder(model: torch.nn.Module, tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(UsageError) as info:
        read_metadata(missing)
    assert str(info.value) == f"checkpoint {missing} does not exist; check the path"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError) as info:  # a folder without a model: no hint to give
        read_metadata(empty)
    assert str(info.value) == f"checkpoint {empty} is a directory; pass a .safetensors file"
    save_model(tmp_path / "run" / "model.safetensors", model, META)
    with pytest.raises(UsageError) as info:
        read_metadata(tmp_path / "run")
    assert str(info.value) == (
        f"checkpoint {tmp_path / 'run'} is a directory (did you mean DIR/model.safetensors?); "
        "pass a .safetensors file"
    )
    # the file the hint names is the run's checkpoint, with every field as saved, JSON-clean
    meta = read_metadata(tmp_path / "run" / "model.safetensors")
    assert json.loads(json.dumps(meta)) == meta
    assert meta == {
        **META,
        "format": "icckd",
        "format_version": FORMAT_VERSION,
        "versions": {"icckd": __version__, "torch": torch.__version__},
    }


def test_header_length_of_128_mod_256_is_not_taken_for_a_pickle(tmp_path: Path) -> None:
    """The header length's first byte is 0x80, the pickle magic, in 1 checkpoint of 256."""
    path = tmp_path / "m.safetensors"
    for pad in range(256):
        save_tensors(path, {"w": torch.zeros(2)}, {"kind": "teacher", "note": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no padding gave a header length of 128 mod 256")
    assert read_metadata(path)["note"] == "x" * pad
    legacy = tmp_path / "legacy.safetensors"  # a raw pickle (torch.save's old format) still is one
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    assert legacy.read_bytes()[:1] == b"\x80"
    with pytest.raises(IcckdError, match=r"is a PyTorch pickle \(\.pth\) file"):
        read_metadata(legacy)
