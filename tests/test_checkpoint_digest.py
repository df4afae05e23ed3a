"""The digest of a checkpoint's tensor data: written by every save, checked by every reader.

Damage inside the tensor bytes leaves the safetensors header intact, so only the digest can
see it: eval, distill --teacher, --resume and export each refuse it in one line, exit 1, with
nothing written.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from icckd_cli.base.checkpoint import (
    Checkpoint,
    UnverifiedCheckpoint,
    encode_metadata,
    read_metadata,
    save_model,
    weights_hash,
)
from icckd_cli.base.errors import IcckdError
from icckd_cli.data import load_dataset
from icckd_cli.models import create_model
from icckd_cli.models.loading import load_any_model
from icckd_cli.training.rundir import STATE_FILE
from icckd_cli.training.snapshots import save_snapshot, snapshot_path
from tests.helpers import TINY_ERRORS, check_fails, copy, digits_teacher, icckd

DAMAGED = "is damaged: its tensor data does not match the digest recorded when it was written"


def _largest_tensor_middle(path: Path) -> int:
    """The file offset of the middle of the largest tensor (conv weights: no run of zeros)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    begin, end = max(
        (v["data_offsets"] for k, v in header.items() if k != "__metadata__"),
        key=lambda o: o[1] - o[0],
    )
    return 8 + n + (begin + end) // 2


def _flip(b: bytes) -> bytes:
    return bytes(x ^ 0xFF for x in b)


def _zero(b: bytes) -> bytes:
    return bytes(len(b))


def _random(b: bytes) -> bytes:
    return random.Random(0).randbytes(len(b))


def damage(path: Path, how: Callable[[bytes], bytes]) -> None:
    """16 bytes in the middle of the largest tensor replaced; the header left as it was."""
    at = _largest_tensor_middle(path)
    data = bytearray(path.read_bytes())
    new = how(bytes(data[at : at + 16]))
    assert new != data[at : at + 16]  # the damage changes the bytes
    data[at : at + 16] = new
    path.write_bytes(bytes(data))


HOW = pytest.mark.parametrize("how", [_flip, _zero, _random], ids=["flipped", "zeroed", "random"])


def test_the_digest_is_the_sha256_of_the_bytes_after_the_header(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    model = digits_teacher(path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    raw = json.loads(data[8 : 8 + n])["__metadata__"]
    assert raw["data_sha256"] == hashlib.sha256(data[8 + n :]).hexdigest()
    ckpt = Checkpoint.read(path)
    assert ckpt.data_sha256 == raw["data_sha256"]
    assert "data_sha256" not in ckpt.meta  # the file's own digest, not the run's metadata
    assert (ckpt.kind, ckpt.arch, ckpt.num_classes) == ("teacher", "resnet8", 10)
    assert ckpt.dataset["name"] == "digits" and ckpt.config == {} and ckpt.model_args == {}
    assert ckpt.weights_sha256 == weights_hash(model.state_dict())
    assert ckpt.file_sha256 == hashlib.sha256(data).hexdigest()
    assert Checkpoint.open(path).file_sha256 == ckpt.file_sha256  # read on demand
    tensors = ckpt.tensors()
    assert tensors.keys() == model.state_dict().keys()
    assert all(torch.equal(tensors[k], v) for k, v in model.state_dict().items())


@HOW
def test_damaged_tensor_data_is_refused_by_every_reader(tmp_path: Path, how) -> None:
    path = tmp_path / "m.safetensors"
    digits_teacher(path)
    damage(path, how)
    assert read_metadata(path)["kind"] == "teacher"  # the header alone cannot tell
    readers = (
        Checkpoint.read,
        lambda p: Checkpoint.open(p).tensors(),
        lambda p: Checkpoint.open(p).file_sha256,
        load_any_model,
    )
    for read in readers:
        with pytest.raises(IcckdError) as err:
            read(path)
        assert err.value.message == f"{path} {DAMAGED}; re-create it or use another checkpoint"
        assert err.value.exit_code == 1


def test_whether_a_file_is_ours_is_asked_of_a_checked_file(tmp_path: Path) -> None:
    """A damaged file is refused, not taken for an icckd file (is_icckd_file's old answer)."""
    path = tmp_path / "m.safetensors"
    digits_teacher(path)
    assert Checkpoint.open(path).is_icckd
    save_file({"w": torch.zeros(2)}, str(tmp_path / "hf.safetensors"))
    assert not Checkpoint.open(tmp_path / "hf.safetensors").is_icckd
    data = path.read_bytes()
    path.write_bytes(data[:8] + b"{" + b"x" * 40 + data[49:])
    with pytest.raises(IcckdError, match="has a damaged header"):
        Checkpoint.open(path)
    with pytest.raises(IcckdError, match="has a damaged header"):  # given an arch, as distill
        load_any_model(path, arch="resnet8")


@HOW
def test_eval_distill_and_export_refuse_a_damaged_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, how
) -> None:
    path = tmp_path / "m.safetensors"
    digits_teacher(path)
    damage(path, how)
    says = f"{path} {DAMAGED}"
    check_fails(capsys, tmp_path, 1, "eval", path, "--device", "cpu", says=says)
    check_fails(
        capsys, tmp_path, 1, "distill", "--teacher", path, "--arch", "resnet8",
        "--out", tmp_path / "student", *TINY_ERRORS, says=says,
    )  # fmt: skip
    check_fails(
        capsys, tmp_path, 1, "export", path, "--to", "torchscript",
        "--out", tmp_path / "m.pt", says=says,
    )  # fmt: skip


@HOW
def test_distill_refuses_a_damaged_snapshot_teacher(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, how
) -> None:
    spec = load_dataset("digits", train_per_class=3, test_per_class=2).spec
    torch.manual_seed(0)
    meta = {"kind": "teacher", "arch": "resnet8", "num_classes": 10, "dataset": spec.to_dict()}
    run = tmp_path / "teacher"
    save_snapshot(run, 2, create_model("resnet8", 10), 50.0, {**meta, "config": {}})
    snap = snapshot_path(run, 2)
    damage(snap, how)
    check_fails(
        capsys, tmp_path, 1, "distill", "--teacher", snap, "--arch", "resnet8",
        "--out", tmp_path / "student", *TINY_ERRORS, says=f"{snap} {DAMAGED}",
    )  # fmt: skip


@HOW
def test_resume_refuses_a_damaged_state_file(
    capsys: pytest.CaptureFixture[str], interrupted: Path, tmp_path: Path, how
) -> None:
    run = copy(interrupted, tmp_path)
    damage(run / STATE_FILE, how)
    check_fails(
        capsys, tmp_path, 1, "train-teacher", "--resume", run,
        says=f"{run / STATE_FILE} {DAMAGED}",
    )  # fmt: skip


def test_a_file_from_before_digests_is_read_with_one_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "m.safetensors"
    model = digits_teacher(path)
    meta = read_metadata(path)
    save_file(dict(model.state_dict()), str(path), metadata=encode_metadata(meta))  # no digest
    with pytest.warns(UnverifiedCheckpoint, match="written before icckd recorded a digest"):
        loaded, _ = load_any_model(path)
    assert weights_hash(loaded.state_dict()) == weights_hash(model.state_dict())
    r = icckd(capsys, "eval", path, "--device", "cpu", "--format", "json")
    assert r.code == 0, r.err
    assert r.err.strip() == (
        f"warning: {path} was written before icckd recorded a digest of its tensors, so "
        "damage inside them cannot be detected; re-create it to get one"
    )


def test_foreign_weights_without_a_digest_read_silently(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", 10)
    save_file(dict(model.state_dict()), str(tmp_path / "hf.safetensors"))
    torch.save(model.state_dict(), tmp_path / "t.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        for name in ("hf.safetensors", "t.pth"):
            loaded, meta = load_any_model(tmp_path / name, arch="resnet8")
            assert meta == {}
            assert weights_hash(loaded.state_dict()) == weights_hash(model.state_dict())


def test_save_model_round_trips_with_its_digest(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", 10)
    meta = {"kind": "student", "arch": "resnet8", "num_classes": 10, "config": {"x": "0" * 63}}
    save_model(tmp_path / "m.safetensors", model, meta)
    ckpt = Checkpoint.read(tmp_path / "m.safetensors")
    assert ckpt.config == {"x": "0" * 63}  # a look-alike of the stand-in is left alone
    assert ckpt.weights_sha256 == weights_hash(model.state_dict())


STRACE = shutil.which("strace")


@pytest.mark.slow
@pytest.mark.skipif(
    STRACE is None,
    reason="strace is not installed: counting the teacher's opens at the system-call level "
    "needs it (apt-get install strace)",
)
def test_distill_opens_the_teacher_file_twice_header_then_tensors(tmp_path: Path) -> None:
    """Header (the data set it records) and tensors: counted as openat calls, safetensors' too."""
    teacher = tmp_path / "T.safetensors"
    digits_teacher(teacher)
    trace = tmp_path / "trace.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    # no --dataset: distill takes it from the teacher's header, the read a validator makes
    cmd = [str(STRACE), "-f", "-e", "trace=openat", "-o", str(trace), sys.executable, "-m",
           "icckd_cli", "distill", "--teacher", str(teacher), "--out", str(tmp_path / "s"),
           "--train-per-class", "3", "--test-per-class", "2", "--epochs", "1",
           "--batch-size", "16", "--device", "cpu"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip().splitlines()[0]}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "s" / "model.safetensors").is_file()
    opens = [line for line in trace.read_text().splitlines() if f'"{teacher}"' in line]
    assert all("openat(" in line for line in opens)
    assert len(opens) == 2, opens
