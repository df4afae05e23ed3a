"""The teacher-output store: the same students as running the teacher, faults, refusals."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.commands import runs
from icckd_cli.methods.kd import kd_loss
from icckd_cli.presentation.lines import teacher_cache_line
from icckd_cli.settings.config import DistillConfig, build
from icckd_cli.training import store
from icckd_cli.training.teacher_source import RunTeacher
from tests.helpers import assert_same_weights, digits_teacher, history, icckd, ok, one_error

Capsys = pytest.CaptureFixture[str]
# 100 digits, 7 batches an epoch (the last of 4), 1 epoch
BASE: dict[str, Any] = {
    "arch": "resnet8", "dataset": "digits", "train_per_class": 10, "test_per_class": 2,
    "epochs": 1, "batch_size": 16, "device": "cpu", "crd_nce_k": 32,
}  # fmt: skip
ROOT = Path(__file__).resolve().parents[1] / "icckd_cli"


def quiet(event: str, info: dict[str, Any]) -> None:
    """A progress callback that ignores everything."""


def distill(tmp: Path, name: str, callback: Any = quiet, **more: Any) -> Path:
    """One small student in tmp/name from tmp/teacher.safetensors."""
    cfg = {**BASE, "teacher": tmp / "teacher.safetensors", "out": tmp / name, **more}
    runs.distill(build(DistillConfig, cfg), callback)
    return tmp / name


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher, a CRD student without the store, and a float32 store made by its twin."""
    tmp = tmp_path_factory.mktemp("store")
    digits_teacher(tmp / "teacher.safetensors")
    distill(tmp, "plain", method="crd")
    distill(tmp, "cached", method="crd", teacher_cache=tmp / "cache", teacher_cache_dtype="float32")
    return tmp


def copy_store(made: Path, tmp_path: Path) -> Path:
    """A private copy of the module's store, to damage or refuse."""
    return Path(shutil.copytree(made / "cache", tmp_path / "cache"))


# ----------------------------------------------------------------------------- the same student


def test_crd_student_from_a_float32_store_equals_one_that_runs_the_teacher(made: Path) -> None:
    # CRD: memory banks and negatives from the global generator, teacher embeddings read back
    assert_same_weights(made / "plain", made / "cached")
    assert history(made / "plain") == history(made / "cached")
    assert store.status(made / "cache") == "complete"


def test_kd_rkd_student_from_the_store_never_runs_the_teacher(
    made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another student seed on the store's data seed: its own initialisation, the same batches
    shutil.copy(made / "teacher.safetensors", tmp_path / "teacher.safetensors")
    plain = distill(tmp_path, "plain", method="kd+rkd", seed=1, data_seed=0)

    def never(self: RunTeacher, batch: Any, epoch: int) -> Any:
        raise AssertionError("the teacher ran")

    monkeypatch.setattr(RunTeacher, "__call__", never)
    cache = copy_store(made, tmp_path)
    more = {"teacher_cache": cache, "teacher_cache_dtype": "float32"}
    cached = distill(tmp_path, "cached", method="kd+rkd", seed=1, data_seed=0, **more)
    assert_same_weights(plain, cached)
    meta = json.loads((cached / "config.json").read_text())
    assert (meta["seed"], meta["data_seed"]) == (1, 0)


def test_data_seed_defaults_to_seed_and_alone_changes_the_batches() -> None:
    def batches(**seeds: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Two epochs of the run's augmented batches: (indices, images) of each."""
        cfg = build(DistillConfig, {**BASE, **seeds})
        data = runs.load_data(cfg, torch.device("cpu"))
        loader = runs.train_loader(cfg, data, views=1, channels_last=False)
        return [(b.index, b.views[0]) for e in range(2) for b in loader.epoch(e, 0)]

    def same(a: list[Any], b: list[Any]) -> bool:
        return len(a) == len(b) and all(
            torch.equal(i, j) and torch.equal(x, y) for (i, x), (j, y) in zip(a, b, strict=True)
        )

    assert build(DistillConfig, {**BASE, "seed": 3}).resolved_data_seed() == 3
    assert build(DistillConfig, {**BASE, "seed": 3, "data_seed": 0}).resolved_data_seed() == 0
    by_seed = batches(seed=3)
    assert same(by_seed, batches(seed=3, data_seed=3))  # the default is the seed
    assert same(by_seed, batches(seed=7, data_seed=3))  # the seed alone moves no batch
    other = batches(seed=3, data_seed=0)  # the data seed alone moves them
    assert not any(torch.equal(i, j) for (i, _), (j, _) in zip(by_seed, other, strict=True))
    assert not torch.equal(by_seed[0][1], other[0][1])


def test_float16_store_keeps_outputs_within_half_precision(made: Path, tmp_path: Path) -> None:
    # the tolerance is on what the store changes, the teacher outputs: float16 rounding,
    # |x16 - x| <= 2^-11 |x| (+ 2^-24 near 0), and so the KD loss of any student logits
    # against them within 1e-4 relative; students trained on them are close, not equal
    shutil.copy(made / "teacher.safetensors", tmp_path / "teacher.safetensors")
    more = {"teacher_cache": tmp_path / "c16", "teacher_cache_embeddings": True}
    distill(tmp_path, "half", method="kd", **more)
    exact = store.open_store(made / "cache", *_ident(made / "cache"), "cpu")
    rounded = store.open_store(tmp_path / "c16", *_ident(tmp_path / "c16"), "cpu")
    got = {}
    for stem in ("logits", "features"):
        a = torch.from_numpy(np.array(exact.arrays[stem][0]))
        b = torch.from_numpy(np.array(rounded.arrays[stem][0])).float()
        assert rounded.arrays[stem].dtype.name == "float16"
        assert ((a - b).abs() <= a.abs() * 2**-11 + 2**-24).all(), stem
        got[stem] = (a, b)
    (t32, t16), s = (
        got["logits"],
        torch.randn(got["logits"][0].shape, generator=torch.Generator().manual_seed(0)),
    )
    assert math.isclose(kd_loss(s, t16, 4.0).item(), kd_loss(s, t32, 4.0).item(), rel_tol=1e-4)


def _ident(folder: Path) -> tuple[dict[str, Any], store.Layout]:
    header = json.loads((folder / store.HEADER).read_text())
    layout = store.Layout(**header["layout"])
    return header["identity"], layout


def test_topk_keeps_the_top_probabilities_and_spreads_the_rest_evenly() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0, 2.0]])
    values, index = logits.topk(2, dim=1)
    rest = logits.scatter(1, index, float("-inf")).logsumexp(dim=1)
    full = store.rebuild_logits(values, index, rest, 5)
    p, q = F.softmax(logits, dim=1)[0], F.softmax(full, dim=1)[0]
    assert torch.allclose(q[[0, 4]], p[[0, 4]])  # the top 2 exactly, at T = 1
    others = 1 - p[0] - p[4]
    assert torch.allclose(q[[1, 2, 3]], (others / 3).expand(3))  # the rest, evenly


def test_topk_store_via_the_cli_prints_its_size_first(
    capsys: Capsys, made: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "top3"
    r = ok(capsys, "distill", "--teacher", made / "teacher.safetensors", "--arch", "resnet8",
           "--dataset", "digits", "--train-per-class", "10", "--test-per-class", "2",
           "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--out", tmp_path / "s",
           "--teacher-cache", cache, "--teacher-cache-topk", "3")  # fmt: skip
    # 1 epoch, 100 rows: int64 index 800 B + float16 top-3 600 B + int16 classes 600 B +
    # float32 rest 400 B
    assert f"teacher cache: writing 2.4 kB to {cache} (7 batches, float16)" in r.err
    assert f"teacher cache: reading {cache} (2.4 kB); the teacher is not run" in r.err
    header = json.loads((cache / store.HEADER).read_text())
    assert header["layout"]["topk"] == 3
    r = icckd(capsys, "distill", "--teacher", made / "teacher.safetensors", "--arch", "resnet8",
              "--dataset", "digits", "--train-per-class", "10", "--device", "cpu",
              "--out", tmp_path / "t", "--teacher-cache", tmp_path / "x",
              "--teacher-cache-topk", "10")  # fmt: skip
    assert r.code == 2
    assert one_error(r.err) == (
        "error: --teacher-cache-topk 10 keeps every one of the 10 classes; give fewer, or "
        "drop the option to keep all logits"
    )


# ----------------------------------------------------------------------------- faults


def test_a_killed_write_is_never_read_and_resumes_to_the_same_student(
    made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(made / "teacher.safetensors", tmp_path / "teacher.safetensors")
    events: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(store.writer, "SAVE_EVERY", 2)  # progress after batches 2, 4, 6 and 7

    def killed(event: str, info: dict[str, Any]) -> None:
        events.append((event, info))
        if event == "teacher_cache_pass" and info["done"] == 5:  # the process dies here
            raise KeyboardInterrupt

    more = {"method": "crd", "teacher_cache": tmp_path / "cache", "teacher_cache_dtype": "float32"}
    with pytest.raises(KeyboardInterrupt):
        distill(tmp_path, "s", killed, **more)
    cache = tmp_path / "cache"
    assert store.status(cache) == "partial"
    record = json.loads((cache / store.PROGRESS).read_text())
    assert record["batches"] == 4
    assert [end for end, _ in record["checksums"]] == [2, 4]  # one per record, never batch 5
    with pytest.raises(IcckdError, match="is not complete"):
        store.open_store(cache, *_ident(cache), "cpu")
    events.clear()
    distill(tmp_path, "s", lambda e, i: events.append((e, i)), **more)
    (first,) = [i for e, i in events if e == "teacher_cache" and i["action"] != "read"]
    assert (first["action"], first["done"], first["total"]) == ("resume", 4, 7)
    passes = [i["done"] for e, i in events if e == "teacher_cache_pass"]
    assert passes == [5, 6, 7]  # only the missing batches ran
    assert_same_weights(made / "plain", tmp_path / "s")


def test_rows_damaged_before_the_writer_died_are_written_again_never_sealed(
    made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(made / "teacher.safetensors", tmp_path / "teacher.safetensors")
    cache = tmp_path / "cache"
    more = {"method": "crd", "teacher_cache": cache, "teacher_cache_dtype": "float32"}
    monkeypatch.setattr(store.writer, "SAVE_EVERY", 2)  # checksums of batches 1-2, 3-4, 5-6, 7
    distill(tmp_path, "first", **more)
    (cache / store.COMPLETE).unlink()  # as if the writer died before sealing it
    logits = cache / "logits.npy"
    data = bytearray(logits.read_bytes())
    data[2000:2100] = bytes(100)  # rows 46-49 of 40 bytes after a 128-byte header: batch 3
    logits.write_bytes(bytes(data))
    events: list[tuple[str, dict[str, Any]]] = []
    distill(tmp_path, "s", lambda e, i: events.append((e, i)), **more)
    told = [i for e, i in events if e == "teacher_cache" and i["action"] != "read"]
    assert [(i["action"], i["done"]) for i in told] == [("damaged", 2), ("resume", 2)]
    assert teacher_cache_line(told[0]) == (
        f"teacher cache: {cache}: batches 3 to 7 of 7 do not all match the checksums "
        "written with them (or have none); writing them again"
    )
    assert [i["done"] for e, i in events if e == "teacher_cache_pass"] == [3, 4, 5, 6, 7]
    assert_same_weights(made / "plain", tmp_path / "s")  # the damage left no trace
    assert store.status(cache) == "complete"


def test_a_whole_unsealed_store_is_verified_and_sealed_with_a_true_count(
    made: Path, tmp_path: Path
) -> None:
    cache = copy_store(made, tmp_path)
    (cache / store.COMPLETE).unlink()
    shutil.copy(made / "teacher.safetensors", tmp_path / "teacher.safetensors")
    events: list[tuple[str, dict[str, Any]]] = []
    more = {"teacher_cache": cache, "teacher_cache_dtype": "float32"}
    distill(tmp_path, "s", lambda e, i: events.append((e, i)), method="crd", **more)
    (told, _) = [i for e, i in events if e == "teacher_cache"]
    assert (told["action"], told["done"], told["total"]) == ("seal", 7, 7)
    assert teacher_cache_line(told) == (
        f"teacher cache: all 7 batches of {cache} verified; sealing it"
    )
    assert not [e for e, _ in events if e == "teacher_cache_pass"]  # the teacher never ran
    assert store.status(cache) == "complete"
    assert not (cache / store.LOCK).exists()  # a sealed store suggests no writer
    assert_same_weights(made / "plain", tmp_path / "s")


def test_a_teacher_cache_path_that_is_a_file_is_refused(
    capsys: Capsys, made: Path, tmp_path: Path
) -> None:
    path = tmp_path / "store.npy"
    path.write_text("not a folder")
    r = icckd(capsys, "distill", "--teacher", made / "teacher.safetensors", "--arch",
              "resnet8", "--dataset", "digits", "--train-per-class", "10", "--epochs", "1",
              "--device", "cpu", "--out", tmp_path / "s", "--teacher-cache", path)  # fmt: skip
    assert r.code == 2
    assert one_error(r.err) == (
        f"error: teacher cache {path}: {path} is a file, not a folder; give --teacher-cache "
        "a folder (a new one is created), or move the file away"
    )
    assert path.read_text() == "not a folder"
    assert not (tmp_path / "s").exists()


def test_ctrl_c_while_writing_keeps_what_was_written(made: Path, tmp_path: Path) -> None:
    import os
    import signal

    shutil.copy(made / "teacher.safetensors", tmp_path / "teacher.safetensors")

    def ctrl_c(event: str, info: dict[str, Any]) -> None:
        if event == "teacher_cache_pass" and info["done"] == 5:
            os.kill(os.getpid(), signal.SIGINT)

    cache = tmp_path / "cache"
    with pytest.raises(IcckdError) as exc:
        distill(tmp_path, "s", ctrl_c, teacher_cache=cache)
    assert exc.value.exit_code == 130
    assert exc.value.message == (
        f"interrupted while writing the teacher cache {cache} (5 of 7 batches kept); run the "
        "same command again to continue it"
    )
    assert json.loads((cache / store.PROGRESS).read_text())["batches"] == 5
    assert store.status(cache) == "partial"


def test_a_write_killed_before_its_files_is_rebuilt(made: Path, tmp_path: Path) -> None:
    cache = copy_store(made, tmp_path)
    (cache / store.COMPLETE).unlink()
    (cache / "features.npy").unlink()  # killed while creating the arrays
    shutil.copy(made / "teacher.safetensors", tmp_path / "teacher.safetensors")
    events: list[dict[str, Any]] = []
    more = {"teacher_cache": cache, "teacher_cache_dtype": "float32"}
    distill(tmp_path, "s", lambda e, i: events.append(i) if e == "teacher_cache" else 0,
            method="crd", **more)  # fmt: skip
    assert [(i["action"], i.get("done")) for i in events] == [("write", 0), ("read", None)]
    assert_same_weights(made / "plain", tmp_path / "s")


def test_interrupted_student_on_the_store_resumes_bit_for_bit(
    capsys: Capsys, made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal

    from icckd_cli.training.engine import Interrupted

    cache = copy_store(made, tmp_path)
    shutil.copy(made / "teacher.safetensors", tmp_path / "teacher.safetensors")

    def stop(event: str, info: dict[str, Any]) -> None:
        if event == "step" and (info["epoch"], info["step"]) == (0, 3):
            os.kill(os.getpid(), signal.SIGINT)

    more = {"teacher_cache": cache, "teacher_cache_dtype": "float32", "method": "crd"}
    with pytest.raises(Interrupted):
        distill(tmp_path, "s", stop, **more)
    ok(capsys, "distill", "--resume", tmp_path / "s")
    assert_same_weights(made / "plain", tmp_path / "s")
    assert history(made / "plain") == history(tmp_path / "s")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            {"data_seed": 1},
            "its augmentation differs (data_seed 0 there, 1 here); pass --data-seed 0 (the "
            "seed it was written under) to read it, use another --teacher-cache folder",
        ),
        ({"batch_size": 20}, "its augmentation differs (batch_size 16 there, 20 here)"),
        ({"crop_padding": 2}, "its augmentation differs (crop_padding 4 there, 2 here)"),
        ({"train_per_class": 9}, "its data differs (train_per_class 10 there, 9 here; images"),
        ({"epochs": 2}, "its epochs differs (epochs 1 there, 2 here)"),
        (
            {"teacher_cache_dtype": "float16"},
            "holds other contents (dtype float32 there, float16 here)",
        ),
    ],
)
def test_a_store_made_for_another_run_is_refused(
    made: Path, tmp_path: Path, change: dict[str, Any], says: str
) -> None:
    cache = copy_store(made, tmp_path)
    shutil.copy(made / "teacher.safetensors", tmp_path / "teacher.safetensors")
    cfg = {"method": "kd", "teacher_cache": cache, "teacher_cache_dtype": "float32", **change}
    with pytest.raises(UsageError) as exc:
        distill(tmp_path, "s", **cfg)
    assert says in exc.value.message
    assert exc.value.message.startswith(f"teacher cache {cache} ")
    assert exc.value.message.endswith(f"or delete {cache} to rebuild it")


def test_a_store_of_another_teacher_or_without_embeddings_is_refused(
    capsys: Capsys, made: Path, tmp_path: Path
) -> None:
    from icckd_cli.base.checkpoint import load_tensors, read_metadata, save_tensors, weights_hash

    cache = copy_store(made, tmp_path)
    other = tmp_path / "teacher.safetensors"  # the same architecture, other weights
    tensors = load_tensors(made / "teacher.safetensors")
    tensors["fc.bias"] = tensors["fc.bias"] + 1
    save_tensors(other, tensors, read_metadata(made / "teacher.safetensors"))
    r = icckd(capsys, "distill", "--teacher", other, "--arch", "resnet8", "--dataset", "digits",
              "--train-per-class", "10", "--test-per-class", "2", "--epochs", "1",
              "--batch-size", "16", "--device", "cpu", "--out", tmp_path / "s",
              "--teacher-cache", cache, "--teacher-cache-dtype", "float32")  # fmt: skip
    assert r.code == 2
    there = weights_hash(load_tensors(made / "teacher.safetensors"))[:12]
    here = weights_hash(tensors)[:12]
    assert one_error(r.err) == (
        f"error: teacher cache {cache} was made for another run: its teacher differs (sha256 "
        f"{there} there, {here} here); use another --teacher-cache folder, or delete {cache} "
        "to rebuild it"
    )
    kd_only = tmp_path / "kd"
    shutil.copy(made / "teacher.safetensors", tmp_path / "t2.safetensors")
    cfg = {**BASE, "teacher": tmp_path / "t2.safetensors", "teacher_cache_dtype": "float32"}
    runs.distill(build(DistillConfig, {**cfg, "out": tmp_path / "a", "teacher_cache": kd_only}),
                 quiet)  # fmt: skip
    with pytest.raises(UsageError) as exc:
        runs.distill(build(DistillConfig, {**cfg, "out": tmp_path / "b", "teacher_cache": kd_only,
                                           "method": "rkd"}), quiet)  # fmt: skip
    assert exc.value.message == (
        f"teacher cache {kd_only} holds no teacher embeddings, which RKD and CRD need; use "
        f"another --teacher-cache folder, or delete {kd_only} to rebuild it with them"
    )


@pytest.mark.parametrize("damage", ["truncate", "garble", "remove"])
def test_a_damaged_file_is_an_error_naming_it(
    capsys: Capsys, made: Path, tmp_path: Path, damage: str
) -> None:
    cache = copy_store(made, tmp_path)
    target = cache / "logits.npy"
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "garble":
        target.write_bytes(b"not numpy" + data[9:])
    else:
        target.unlink()
    r = icckd(capsys, "distill", "--teacher", made / "teacher.safetensors", "--arch", "resnet8",
              "--dataset", "digits", "--train-per-class", "10", "--test-per-class", "2",
              "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--out", tmp_path / "s",
              "--teacher-cache", cache, "--teacher-cache-dtype", "float32")  # fmt: skip
    assert r.code == 1
    line = one_error(r.err)
    assert line.startswith(f"error: teacher cache file {target} is damaged (")
    assert line.endswith(f"); delete {cache} to rebuild the store")
    assert not (tmp_path / "s").exists()  # refused before the run folder is made


def test_a_store_over_the_limit_is_refused_before_anything_is_written(
    capsys: Capsys, made: Path, tmp_path: Path
) -> None:
    r = icckd(capsys, "distill", "--teacher", made / "teacher.safetensors", "--arch", "resnet8",
              "--dataset", "digits", "--train-per-class", "10", "--device", "cpu",
              "--epochs", "1", "--batch-size", "16", "--out", tmp_path / "s",
              "--teacher-cache", tmp_path / "c",
              "--teacher-cache-limit-gb", "0.000001")  # fmt: skip
    assert r.code == 2
    assert one_error(r.err) == (
        f"error: the teacher cache {tmp_path / 'c'} would take 2.8e-06 GB, more than "
        "--teacher-cache-limit-gb 1e-06; keep fewer logits (--teacher-cache-topk K), raise "
        "the limit, or distill without the cache"
    )
    assert not (tmp_path / "c").exists()
