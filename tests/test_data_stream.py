"""Streamed ImageNet-style folders: labels, transforms, determinism, shards, bad files."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from icckd_cli.base.errors import DataFileError, UsageError
from icckd_cli.commands import runs
from icckd_cli.data import (
    IMAGENET_STATS,
    Holdout,
    LoadOptions,
    StreamLoader,
    StreamSplit,
    eval_batches,
    load_dataset,
    make_loader,
)
from icckd_cli.data.holdout import split_class
from icckd_cli.data.stream import centre_box, random_resized_box
from icckd_cli.settings.config import TrainTeacherConfig, build
from icckd_cli.training.rundir import STATE_FILE
from tests.helpers import history, icckd
from tests.imagesets import COLOURS, image_folder

CLASSES = ["apple", "bear", "cloud", "dune"]
SIZE = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_folder(tmp_path_factory.mktemp("imagenet"), CLASSES)


def _load(folder: Path, workers: int = 0, **kw: int) -> tuple:
    ds = load_dataset(
        "imagenet", folder, options=LoadOptions(image_size=SIZE, workers=workers), **kw
    )
    return ds.spec, ds.train, ds.test


def _pixels(x: torch.Tensor) -> torch.Tensor:
    """Normalised (B, 3, S, S) back to 0..255 per-image channel means (B, 3)."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET_STATS)
    return (x * std + mean).mul(255).mean(dim=(2, 3))


def test_labels_classes_and_subsets(folder: Path) -> None:
    spec, train, test = _load(folder)
    assert isinstance(train, StreamSplit) and len(train) == 24 and len(test) == 8
    assert spec.classes == CLASSES and spec.num_classes == 4 and spec.image_size == SIZE
    assert (spec.mean, spec.std) == tuple(IMAGENET_STATS)
    assert train.labels.tolist() == [c for c in range(4) for _ in range(6)]
    assert train.path(7).endswith("train/bear/001.png")
    _, small, small_test = _load(folder, train_per_class=2, test_per_class=1)
    assert small.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and len(small_test) == 4
    assert small.path(2) == train.path(6)


def test_eval_is_deterministic_and_decodes_every_mode(folder: Path) -> None:
    spec, _, test = _load(folder, workers=2)
    first = list(eval_batches(test, spec, 3))
    again = list(eval_batches(test, spec, 3))
    assert [x.shape for x, _ in first] == [(3, 3, SIZE, SIZE)] * 2 + [(2, 3, SIZE, SIZE)]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    x, y = torch.cat([b[0] for b in first]), torch.cat([b[1] for b in first])
    assert y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    rgb = _pixels(x)  # (8, 3): RGB, greyscale, CMYK, RGBA and palette files, all 3 channels
    for m, label in zip(rgb, y.tolist(), strict=True):
        if m.max() - m.min() > 5:
            assert (m - torch.tensor(COLOURS[label], dtype=torch.float)).abs().max() < 6
        else:  # greyscale file or the grey class
            assert m.std() < 1
    assert (rgb[6:] - 128).abs().max() < 3  # the grey class stays grey in every mode


def test_train_views_shapes_and_same_order_whatever_the_workers(folder: Path) -> None:
    spec, train, _ = _load(folder)
    alone = StreamLoader(train, spec, 8, views=2, seed=3)
    batches = list(alone.epoch(1))
    assert len(alone) == 3 and [len(b.views) for b in batches] == [2, 2, 2]
    b = batches[0]
    assert b.views[0].shape == (8, 3, SIZE, SIZE) and b.views[0].dtype == torch.float32
    assert torch.equal(b.labels, train.labels[b.index])
    assert not torch.equal(b.views[0], b.views[1])  # two crops of one decoded image
    # each image's crops come from (seed, epoch, index): worker processes change nothing
    workers = StreamLoader(
        StreamSplit(train.files, train.labels, SIZE, 2), spec, 8, views=2, seed=3
    )
    for a, w in zip(batches, workers.epoch(1), strict=True):
        assert torch.equal(a.index, w.index) and torch.equal(a.views[1], w.views[1])
    # resuming at step 2 replays the rest exactly; another epoch is another order
    (tail,) = list(alone.epoch(1, start_step=2))
    assert torch.equal(tail.views[0], batches[2].views[0])
    assert not torch.equal(next(alone.epoch(2)).index, b.index)
    ordered = torch.cat([x.index for x in batches]).sort().values
    assert ordered.tolist() == list(range(24))


def test_validation_files_leave_train_and_are_read_as_the_test_split(folder: Path) -> None:
    opts = LoadOptions(image_size=SIZE, workers=0, holdout=Holdout(per_class=2))
    ds = load_dataset("imagenet", folder, options=opts)
    _, full, _ = _load(folder)
    assert isinstance(ds.val, StreamSplit) and (len(ds.train), len(ds.val)) == (16, 8)
    paths = [full.path(i) for i in range(len(full))]
    val = [ds.val.path(i) for i in range(len(ds.val))]
    train = [ds.train.path(i) for i in range(len(ds.train))]
    assert set(train).isdisjoint(val) and sorted(train + val) == sorted(paths)
    held = [
        split_class(6, c, name, Holdout(per_class=2), None)[1] for c, name in enumerate(CLASSES)
    ]
    assert val == [paths[6 * c + k] for c in range(4) for k in held[c]]  # the shared rule
    assert ds.val.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # the same files whatever --train-per-class keeps of the rest
    small = load_dataset("imagenet", folder, train_per_class=1, options=opts)
    assert [small.val.path(i) for i in range(8)] == val and len(small.train) == 4
    # centre crops, never augmented: two passes agree, and each shows its class's colour
    x, y = (torch.cat(t) for t in zip(*eval_batches(ds.val, ds.spec, 3), strict=True))
    again = torch.cat([b[0] for b in eval_batches(ds.val, ds.spec, 8)])
    assert x.shape == (8, 3, SIZE, SIZE) and torch.equal(x, again)
    for m, label in zip(_pixels(x), y.tolist(), strict=True):
        if m.max() - m.min() > 5:  # a colour file (greyscale ones keep the luminance only)
            assert (m - torch.tensor(COLOURS[label], dtype=torch.float)).abs().max() < 6


def test_streamed_run_evaluates_on_validation(folder: Path, tmp_path: Path) -> None:
    settings = {**_run_settings(folder, tmp_path / "run"), "val_per_class": 2, "epochs": 1}
    settings.update(icc_weight=0, tensorboard=False, eval_batch_size=16)
    result = runs.train_teacher(build(TrainTeacherConfig, settings), lambda e, i: None)
    (row,) = history(tmp_path / "run")
    assert {"val_top1", "val_nll", "top1"} <= set(row)
    assert 100 * round(row["val_top1"] * 8 / 100) / 8 == pytest.approx(row["val_top1"])  # of 8
    assert result.best == {
        "epoch": 1, "top1": row["top1"], "top5": row["top5"], "nll": row["nll"],
        "val_top1": row["val_top1"], "val_top5": row["val_top5"], "val_nll": row["val_nll"],
        "chosen_on": "val",
    }  # fmt: skip
    assert result.validation == {
        "val_per_class": 2, "val_fraction": None, "images": 8, "train_images": 16
    }  # fmt: skip


def test_shards_are_disjoint_and_cover_the_split(folder: Path) -> None:
    spec, train, _ = _load(folder)
    shards = [make_loader(train, spec, 4, seed=1, rank=r, world=2) for r in range(2)]
    seen = [torch.cat([b.index for b in s.epoch(0)]).tolist() for s in shards]
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(24))


def test_crop_boxes() -> None:
    rng = random.Random(0)
    for w, h in [(300, 200), (48, 80), (1000, 10)]:
        for _ in range(50):
            x0, y0, x1, y1 = random_resized_box(w, h, rng)
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert (x1 - x0) * (y1 - y0) <= w * h
    # 256 -> 224: the short side of 300x200 keeps 175 pixels, centred
    assert centre_box(300, 200, 224) == (62.5, 12.5, 237.5, 187.5)


def test_imagefolder_over_the_memory_limit_stops_before_decoding(
    folder: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(UsageError) as err:
        load_dataset("imagefolder", folder, options=LoadOptions(memory_limit_gb=0.0001))
    # 32 files at the first image's 64x64 (its larger side): 32 * 64 * 64 * 3 bytes
    assert err.value.message == (
        f"the 32 images of {folder} would take 0.0 GB decoded at 64x64, over "
        "--memory-limit-gb 0.0001; stream them with --dataset imagenet (or raise "
        "--memory-limit-gb)"
    )
    r = icckd(capsys, "train-teacher", "--dataset", "imagefolder", "--data-dir", str(folder),
              "--memory-limit-gb", "0.0001", "--out", str(tmp_path / "r"))  # fmt: skip
    assert r.code == 2 and r.err.count("\n") == 1 and "--dataset imagenet" in r.err


def test_empty_split_is_named(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "d", CLASSES[:2], val=0)
    (root / "val" / "apple").mkdir(parents=True)
    with pytest.raises(UsageError) as err:
        _load(root)
    assert err.value.message == f"{root}/val holds no images; put <class>/<image> files there"


# ----------------------------------------------------------------------------- training


def _run_settings(folder: Path, out: Path) -> dict:
    return {
        "arch": "resnet8", "dataset": "imagenet", "data_dir": folder, "image_size": SIZE,
        "workers": 0, "epochs": 2, "batch_size": 8, "device": "cpu", "out": out,
        "icc_weight": 0.1, "margin": -1, "queue_size": 4,
    }  # fmt: skip


@pytest.mark.slow
def test_unreadable_file_mid_epoch_saves_state_and_resume_continues(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = shutil.copytree(folder, tmp_path / "data")
    bad = data / "train" / "cloud" / "001.jpg"
    good = bad.read_bytes()
    bad.write_bytes(good[:200])  # truncated JPEG
    out = tmp_path / "run"
    cfg = build(TrainTeacherConfig, _run_settings(data, out))
    with pytest.raises(DataFileError) as err:
        runs.train_teacher(cfg, lambda e, i: None)
    msg = err.value.message
    assert msg.startswith(f"cannot read image {bad} (")
    assert (
        f"); remove or replace it, then continue with icckd train-teacher --resume {out} (" in msg
    )
    assert msg.endswith(")") and "state saved at " in msg
    assert (out / STATE_FILE).is_file() and "\n" not in msg
    bad.write_bytes(good)
    r = icckd(capsys, "train-teacher", "--resume", str(out))
    assert r.code == 0, r.err
    assert [h["epoch"] for h in history(out)] == [1, 2]
    # eval reads the recorded folder, crop size and subset back: centre crops of val/
    r = icckd(capsys, "eval", str(out / "model.safetensors"), "--device", "cpu", "--format", "json")
    assert r.code == 0, r.err
    assert (r.json()["dataset"], r.json()["n"]) == ("imagenet", 8)


@pytest.mark.slow
def test_unreadable_file_exits_1_in_one_line(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = shutil.copytree(folder, tmp_path / "data")
    (data / "train" / "apple" / "000.JPEG").write_bytes(b"\x00" * 64)
    s = _run_settings(data, tmp_path / "run")
    argv = [f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')}={v}"
            for k, v in s.items()]  # fmt: skip
    r = icckd(capsys, "train-teacher", *argv)
    assert r.code == 1 and r.err.count("\n") == 1
    assert r.err.startswith(f"error: cannot read image {data}/train/apple/000.JPEG (")


SHARD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch.distributed as tdist
    from icckd_cli.training import distributed as dist
    from icckd_cli.data import LoadOptions, load_dataset, make_loader

    dist.init_from_env()
    ds = load_dataset("imagenet", sys.argv[1], options=LoadOptions(image_size=16, workers=1))
    loader = make_loader(ds.train, ds.spec, 5, seed=7, rank=dist.rank(), world=dist.world_size())
    seen = [i for b in loader.epoch(0) for i in b.index.tolist()]
    with open(f"{sys.argv[2]}/rank{dist.rank()}.json", "w") as fh:
        json.dump(seen, fh)
    """
)


@pytest.mark.slow
def test_torchrun_ranks_read_disjoint_shards_that_cover_the_split(
    folder: Path, tmp_path: Path
) -> None:
    import json

    script = tmp_path / "shards.py"
    script.write_text(SHARD_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(script), str(folder), str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(seen[0]) == len(seen[1]) == 12
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(24))


def test_a_long_tailed_streamed_split_keeps_the_first_files_of_each_class(
    folder: Path, tmp_path: Path
) -> None:
    from icckd_cli.base.checkpoint import read_metadata
    from icckd_cli.data.imbalance import apply_imbalance

    data = load_dataset("imagenet", folder, options=LoadOptions(image_size=SIZE, workers=0))
    files = {c: [data.train.path(i) for i in range(6 * c, 6 * c + 6)] for c in range(4)}
    # by hand: floor(6 * 3^(-i/3)) for i = 0..3 is 6, 4, 2, 2
    assert apply_imbalance(data, 3) == [6, 4, 2, 2]
    lt = data.train
    assert isinstance(lt, StreamSplit) and len(lt) == 14
    assert lt.labels.tolist() == [0] * 6 + [1] * 4 + [2] * 2 + [3] * 2
    assert [lt.path(i) for i in range(14)] == [
        f for c, n in enumerate([6, 4, 2, 2]) for f in files[c][:n]
    ]
    assert lt.index.tolist() == list(range(14))  # renumbered: what a memory bank keys on
    batches = list(StreamLoader(lt, data.spec, 4, views=1, seed=0).epoch(1))
    seen = torch.cat([b.index for b in batches])
    assert sorted(seen.tolist()) == list(range(14))  # each kept file once per epoch
    assert torch.equal(torch.cat([b.labels for b in batches]), lt.labels[seen])

    # through a run: the streamed teacher trains on those 14 and records their counts
    settings = {**_run_settings(folder, tmp_path / "run"), "epochs": 1, "imbalance_factor": 3}
    settings.update(icc_weight=0, tensorboard=False, eval_batch_size=16)
    runs.train_teacher(build(TrainTeacherConfig, settings), lambda e, i: None)
    dataset = read_metadata(tmp_path / "run" / "model.safetensors")["dataset"]
    assert dataset["train_counts"] == [6, 4, 2, 2] and dataset["imbalance_factor"] == 3
