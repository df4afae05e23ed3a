"""The teacher-output store is trusted only when its bytes check out, and has one writer.

Every file of a store, damaged three ways (zeroed bytes, random bytes, cut short), is refused
before training in one line naming the file and the fix, exit 1, with no run folder left.
A second process never writes a store another one holds; a killed holder frees it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from icckd_cli.base.errors import IcckdError
from icckd_cli.commands import runs
from icckd_cli.settings.config import DistillConfig, build
from icckd_cli.training import store
from tests.helpers import digits_teacher, icckd
from tests.test_errors import one_error

Capsys = pytest.CaptureFixture[str]
BASE: dict[str, Any] = {
    "arch": "resnet8", "dataset": "digits", "train_per_class": 10, "test_per_class": 2,
    "epochs": 1, "batch_size": 16, "device": "cpu",
}  # fmt: skip
# the full store keeps logits and features; the top-k one its three arrays
STORES = {"full": {"method": "crd", "crd_nce_k": 32}, "topk": {"teacher_cache_topk": 3}}
FILES = [
    ("full", "index.npy"), ("full", "logits.npy"), ("full", "features.npy"),
    ("full", "header.json"), ("full", "complete.json"), ("topk", "topk_logits.npy"),
    ("topk", "topk_index.npy"), ("topk", "rest.npy"), ("topk", "header.json"),
]  # fmt: skip


def quiet(event: str, info: dict[str, Any]) -> None:
    """A progress callback that ignores everything."""


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher, and a full and a top-k store written by one-epoch students of it."""
    tmp = tmp_path_factory.mktemp("integrity")
    digits_teacher(tmp / "teacher.safetensors")
    for name, more in STORES.items():
        cfg = {**BASE, **more, "teacher": tmp / "teacher.safetensors", "out": tmp / f"s-{name}"}
        runs.distill(build(DistillConfig, {**cfg, "teacher_cache": tmp / name}), quiet)
    return tmp


def student(capsys: Capsys, made: Path, cache: Path, out: Path, kind: str) -> Any:
    """`icckd distill` reading `cache`, as the store of `kind` was written."""
    more = [x for k, v in STORES[kind].items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return icckd(capsys, "distill", "--teacher", made / "teacher.safetensors", "--arch",
                 "resnet8", "--dataset", "digits", "--train-per-class", "10",
                 "--test-per-class", "2", "--epochs", "1", "--batch-size", "16", "--device",
                 "cpu", "--out", out, "--teacher-cache", cache, *more)  # fmt: skip


def damage(path: Path, how: str) -> None:
    """Zero or randomise 256 bytes from the middle of a file (same size), or cut it short."""
    data = bytearray(path.read_bytes())
    lo = len(data) // 2
    hi = min(len(data), lo + 256)
    if how == "truncate":
        path.write_bytes(bytes(data[:lo]))
        return
    if how == "zero":
        data[lo:hi] = bytes(hi - lo)
    else:
        rng = np.random.default_rng(0)
        data[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    assert bytes(data) != path.read_bytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["zero", "random", "truncate"])
@pytest.mark.parametrize(("kind", "file"), FILES)
def test_a_damaged_store_file_is_refused_before_training(
    capsys: Capsys, made: Path, tmp_path: Path, kind: str, file: str, how: str
) -> None:
    cache = Path(shutil.copytree(made / kind, tmp_path / "cache"))
    damage(cache / file, how)
    out = tmp_path / "s"
    r = student(capsys, made, cache, out, kind)
    assert r.code == 1
    line = one_error(r.err)
    assert line.startswith(f"error: teacher cache file {cache / file} is damaged ("), line
    assert line.endswith(f"); delete {cache} to rebuild the store"), line
    assert not out.exists()  # no half run folder


def test_the_message_names_the_damaged_bytes(made: Path, tmp_path: Path) -> None:
    cache = Path(shutil.copytree(made / "full", tmp_path / "cache"))
    path = cache / "logits.npy"
    size = path.stat().st_size
    damage(path, "zero")
    header = json.loads((cache / store.HEADER).read_text())
    with pytest.raises(IcckdError) as exc:
        store.open_store(cache, header["identity"], store.Layout(**header["layout"]), "cpu")
    assert exc.value.message == (
        f"teacher cache file {path} is damaged (bytes 0 to {size} differ from their checksum "
        f"in complete.json); delete {cache} to rebuild the store"
    )


def test_a_text_file_under_an_array_name_is_called_that(
    capsys: Capsys, made: Path, tmp_path: Path
) -> None:
    cache = Path(shutil.copytree(made / "full", tmp_path / "cache"))
    path = cache / "logits.npy"
    size = path.stat().st_size
    path.write_text(("0.1,0.2\n" * size)[:size])  # its very size, but text
    r = student(capsys, made, cache, tmp_path / "s", "full")
    assert r.code == 1
    assert one_error(r.err) == (
        f"error: teacher cache file {path} is damaged (it is not a NumPy array file: no .npy "
        f"header); delete {cache} to rebuild the store"
    )


def test_a_header_edited_into_other_valid_json_is_refused(
    capsys: Capsys, made: Path, tmp_path: Path
) -> None:
    cache = Path(shutil.copytree(made / "full", tmp_path / "cache"))
    header = json.loads((cache / store.HEADER).read_text())
    header["layout"]["feature_dim"] = 1  # parses, and would mis-shape the features
    (cache / store.HEADER).write_text(json.dumps(header, indent=2) + "\n")
    r = student(capsys, made, cache, tmp_path / "s", "full")
    assert r.code == 1
    assert one_error(r.err) == (
        f"error: teacher cache file {cache / store.HEADER} is damaged (its checksum differs "
        f"from complete.json's); delete {cache} to rebuild the store"
    )


def test_checksums_cover_each_chunk(made: Path, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 5)  # 1280 bytes: chunks of 512, 512 and 256
    sums = store.format.chunk_sums(path, 512)
    import hashlib

    data = path.read_bytes()
    assert sums == [hashlib.sha256(data[i : i + 512]).hexdigest() for i in (0, 512, 1024)]
    done = json.loads((made / "full" / store.COMPLETE).read_text())
    assert done["checksums"]["algorithm"] == "sha256"
    assert done["checksums"]["chunk_bytes"] == store.CHUNK == 1 << 26
    assert sorted(done["checksums"]["files"]) == ["features", "index", "logits"]


def test_a_store_without_checksums_is_refused_in_one_line(
    capsys: Capsys, made: Path, tmp_path: Path
) -> None:
    cache = Path(shutil.copytree(made / "full", tmp_path / "cache"))
    done = json.loads((cache / store.COMPLETE).read_text())
    del done["checksums"]  # as an earlier icckd wrote it
    (cache / store.COMPLETE).write_text(json.dumps(done))
    r = student(capsys, made, cache, tmp_path / "s", "full")
    assert r.code == 1
    assert one_error(r.err) == (
        f"error: teacher-output store {cache} holds no checksums (an earlier icckd wrote it); "
        f"delete {cache} to rebuild the store"
    )
    assert not (tmp_path / "s").exists()


# another process holding the lock as a writer would (lock.py alone: no torch to import)
HOLD = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", sys.argv[2])
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
with lock.writer_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_is_refused_and_a_killed_holder_frees_the_store(
    capsys: Capsys, made: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(cache), store.lock.__file__],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        r = student(capsys, made, cache, tmp_path / "s", "full")  # this process: the second
        assert r.code == 1
        line = one_error(r.err)
        lead = f"error: teacher-output store {cache} is being written by process {holder.pid} "
        assert line.startswith(f"{lead}on {socket.gethostname()} since "), line
        assert line.endswith(
            " UTC; run this command again once that one has finished (it then reads the "
            "store), or choose another --teacher-cache folder"
        )
        assert store.status(cache) == "absent"  # the refused process wrote nothing
        assert not (tmp_path / "s").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up code runs: the OS frees the lock
        holder.wait()
    assert (cache / store.LOCK).is_file()  # its text stays behind, and binds no one
    r = student(capsys, made, cache, tmp_path / "s", "full")
    assert r.code == 0, r.err
    assert store.status(cache) == "complete"
    assert not (cache / store.LOCK).exists()  # removed on sealing: nothing suggests a writer
