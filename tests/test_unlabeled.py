"""Students with few labels: hidden labels, unlabelled folders, batch ratio, live teacher."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from icckd_cli.commands import inputs, runs
from icckd_cli.commands.experiment.config import load_experiment
from icckd_cli.commands.experiment.matrix import run_experiment
from icckd_cli.data import DataSpec, DeviceLoader
from icckd_cli.data.registry import LoadOptions, Split
from icckd_cli.data.unlabeled import HIDDEN, hide_labels, load_unlabeled, ratio_order
from icckd_cli.settings.config import DistillConfig, build
from icckd_cli.training.engine import Interrupted
from tests.helpers import USAGE, assert_same_weights, digits_teacher, icckd, tiny_experiment

DIGITS = {"dataset": "digits", "device": "cpu"}


def _train(**settings: Any) -> Split:
    """The training split `distill` would train on with these settings (on the CPU)."""
    cfg = build(DistillConfig, {**DIGITS, **settings})
    return inputs.load_data(cfg, torch.device("cpu")).train


def _images(root: Path, count: int) -> list[Path]:
    """`count` small RGB images of varied sizes, half of them in nested class-like folders."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        folder = root / ("cat/deep" if i % 2 else "") / ""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (8 + i % 3, 10, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- counts


@pytest.mark.parametrize("val", [{}, {"val_per_class": 10}])
def test_n_labelled_per_class_the_rest_hidden_seed_free_and_nested(val: dict[str, Any]) -> None:
    full = _train(**val)
    by_n = {n: _train(labels_per_class=n, **val) for n in (5, 15)}
    for n, split in by_n.items():
        assert torch.equal(split.images, full.images)  # every image kept
        counts = torch.bincount(split.labels[split.labels >= 0], minlength=10)
        assert counts.tolist() == [n] * 10
        assert int((split.labels == HIDDEN).sum()) == len(full) - 10 * n
        known = split.labels >= 0
        assert torch.equal(split.labels[known], full.labels[known])  # labels kept are true ones
        # the labelled images are exactly those --train-per-class N keeps
        assert torch.equal(split.images[known], _train(train_per_class=n, **val).images)
    # seed-free: another seed and data seed hide the same labels
    other_seed = _train(labels_per_class=5, seed=7, data_seed=3, **val)
    assert torch.equal(other_seed.labels, by_n[5].labels)
    # nested: the labelled images of 5 are labelled for 15 too
    assert bool((by_n[15].labels[by_n[5].labels >= 0] >= 0).all())


def test_more_labels_than_a_class_holds_is_refused_in_one_line(capsys: Any, tmp_path: Path) -> None:
    teacher = tmp_path / "t.safetensors"
    digits_teacher(teacher)
    out = tmp_path / "s"
    r = icckd(capsys, "distill", "--teacher", teacher, "--arch", "resnet8", "--dataset", "digits",
              "--train-per-class", "4", "--labels-per-class", "5", "--device", "cpu",
              "--out", out)  # fmt: skip
    assert r.code == USAGE
    assert r.err.strip() == (
        "error: --labels-per-class 5 asks for more labelled images than the 4 training images "
        "of class '0'; lower --labels-per-class"
    )
    assert not out.exists()


# ----------------------------------------------------------------------------- the extra folder


def test_an_unlabeled_folder_is_read_nested_and_flat_resized_hidden_and_cached(
    tmp_path: Path,
) -> None:
    files = _images(tmp_path / "extra", 7)
    events: list[tuple[str, dict[str, Any]]] = []
    opts = LoadOptions(progress=lambda e, i: events.append((e, i)))
    split = load_unlabeled(tmp_path / "extra", 32, opts)
    assert split.images.shape == (7, 3, 32, 32) and split.images.dtype == torch.uint8
    assert split.labels.tolist() == [HIDDEN] * 7
    # sorted by path: flat files first, then the nested folder; each resized like the loaders
    order = sorted(files)
    rgb = Image.open(order[0]).convert("RGB")
    first = np.array(rgb.resize((32, 32), Image.Resampling.BILINEAR))
    assert torch.equal(split.images[0], torch.from_numpy(first).permute(2, 0, 1))
    assert any(e == "warning" and "7 of the 7 unlabelled images" in i["message"] for e, i in events)
    # decoded once: a second read comes from the cache, without a decode event
    events.clear()
    again = load_unlabeled(tmp_path / "extra", 32, opts)
    assert torch.equal(again.images, split.images) and not events

    train = _train(train_per_class=20, labels_per_class=5, unlabeled_dir=tmp_path / "extra")
    assert len(train) == 200 + 7 and torch.equal(train.images[200:], split.images)
    assert train.labels[200:].tolist() == [HIDDEN] * 7
    assert train.index.tolist() == list(range(207))


def test_an_empty_unlabeled_folder_is_refused_in_one_line(capsys: Any, tmp_path: Path) -> None:
    teacher = tmp_path / "t.safetensors"
    digits_teacher(teacher)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "s"
    r = icckd(capsys, "distill", "--teacher", teacher, "--arch", "resnet8", "--dataset", "digits",
              "--unlabeled-dir", tmp_path / "empty", "--device", "cpu", "--out", out)  # fmt: skip
    assert r.code == USAGE
    assert r.err.strip().startswith(f"error: --unlabeled-dir {tmp_path / 'empty'} holds no images")
    assert "\n" not in r.err.strip() and not out.exists()


# ----------------------------------------------------------------------------- batches


def test_each_batch_holds_its_share_of_unlabelled_images_and_every_labelled_one_once() -> None:
    labels = torch.tensor([0, 1] * 16 + [HIDDEN] * 40)  # 32 labelled, 40 hidden
    g = torch.Generator().manual_seed(0)
    rows = ratio_order(labels, 0.25, 16, g)  # 12 labelled + 4 unlabelled a batch
    assert rows.shape == (3, 16)  # ceil(32 / 12) steps: one pass over the labelled images
    for row in rows:
        assert (labels[row[:12]] >= 0).all() and (labels[row[12:]] == HIDDEN).all()
    assert set(rows[:, :12].flatten().tolist()) == set(range(32))  # each labelled one seen
    assert len(set(rows[:, 12:].flatten().tolist())) == 12  # no unlabelled one twice
    # ratio 0: the labelled images alone, all of them in one batch when they fit
    only = ratio_order(labels, 0.0, 64, torch.Generator().manual_seed(0))
    assert only.shape == (1, 32) and sorted(only[0].tolist()) == list(range(32))


def test_the_loader_with_a_ratio_replays_an_epoch_from_any_step() -> None:
    images = torch.randint(0, 256, (72, 3, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 16 + [HIDDEN] * 40)
    spec = DataSpec("t", 2, ["a", "b"], [0.5] * 3, [0.25] * 3, 8, True)
    loader = DeviceLoader(Split(images, labels, torch.arange(72)), spec, 16, unlabeled_ratio=0.25)
    full = list(loader.epoch(2))
    assert len(loader) == len(full) == 3
    later = list(loader.epoch(2, start_step=1))
    assert all(torch.equal(a.views[0], b.views[0]) for a, b in zip(full[1:], later, strict=True))
    assert [int((b.labels == HIDDEN).sum()) for b in full] == [4, 4, 4]


# ----------------------------------------------------------------------------- whole runs

RUN = {**DIGITS, "arch": "resnet8", "train_per_class": 20, "test_per_class": 5,
       "epochs": 1, "batch_size": 32, "seed": 0}  # fmt: skip


def _distill(tmp_path: Path, name: str, **settings: Any) -> Path:
    teacher = tmp_path / "teacher.safetensors"
    if not teacher.exists():
        digits_teacher(teacher)
    cfg = build(DistillConfig, {**RUN, "teacher": teacher, "out": tmp_path / name, **settings})
    runs.distill(cfg, lambda e, i: None)
    return tmp_path / name


def _permuting(monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    """Permute, as the data set is loaded, the true labels of the images that `distill` will
    hide (`which` = "hidden") or keep ("kept"). Only images after the last kept one are
    permuted among themselves, so the first N of each class (the kept ones) stay the same."""
    real = inputs.load_dataset

    def load(*args: Any, **kwargs: Any) -> Any:
        data = real(*args, **kwargs)
        labels = data.train.labels.clone()
        kept = hide_labels(data.train, 5, data.spec.classes).labels >= 0
        last = int(kept.nonzero().max())
        pos = (~kept).nonzero().flatten()
        pos = pos[pos > last] if which == "hidden" else kept.nonzero().flatten()
        g = torch.Generator().manual_seed(1)
        labels[pos] = labels[pos[torch.randperm(len(pos), generator=g)]]
        assert int((labels != data.train.labels).sum()) > 20  # many labels really changed
        data.train = Split(data.train.images, labels, data.train.index)
        return data

    monkeypatch.setattr(inputs, "load_dataset", load)


@pytest.mark.parametrize(
    "method",
    [
        {"method": "kd"},
        {"method": "dkd"},
        {"method": "dist"},
        {"method": "kd", "logit_standardization": True},
    ],  # fmt: skip
    ids=["kd", "dkd", "dist", "kd-standardized"],
)
def test_permuting_the_hidden_labels_leaves_the_trained_weights_bit_identical(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, method: dict[str, Any]
) -> None:
    settings = {"labels_per_class": 5, "mixup": 0.4, **method}
    plain = _distill(tmp_path, "plain", **settings)
    with monkeypatch.context() as m:
        _permuting(m, "hidden")
        permuted = _distill(tmp_path, "permuted", **settings)
    assert_same_weights(plain, permuted)
    # the check can fail: permuting the labels that are kept changes the student
    with monkeypatch.context() as m:
        _permuting(m, "kept")
        kept = _distill(tmp_path, "kept", **settings)
    with pytest.raises(AssertionError):
        assert_same_weights(plain, kept)


def test_the_teacher_sees_exactly_the_students_tensor_at_every_step_mixup_included(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _images(tmp_path / "extra", 30)
    seen: dict[str, list[torch.Tensor]] = {"teacher": [], "student": []}

    def recording(who: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            model = fn(*args, **kwargs)
            target = model[0] if isinstance(model, tuple) else model

            def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
                if who == "teacher" or module.training:  # the student's training steps only
                    seen[who].append(inputs[0].detach().clone())

            target.register_forward_pre_hook(hook)
            return model

        return wrapped

    monkeypatch.setattr(runs, "load_teacher", recording("teacher", runs.load_teacher))
    monkeypatch.setattr(runs, "build_model", recording("student", runs.build_model))
    mixed: list[float] = []
    real_mix = inputs.MixupLoader.epoch

    def epoch(self: Any, epoch: int, start_step: int = 0) -> Any:
        for batch in real_mix(self, epoch, start_step):
            mixed.append(batch.mix[0])
            yield batch

    monkeypatch.setattr(inputs.MixupLoader, "epoch", epoch)
    settings = {"labels_per_class": 5, "unlabeled_dir": tmp_path / "extra", "mixup": 1.0}
    _distill(tmp_path, "s", epochs=2, unlabeled_ratio=0.5, **settings)
    assert len(seen["student"]) == len(seen["teacher"]) == len(mixed) > 4
    assert all(0 < lam < 1 for lam in mixed)  # every batch was mixed
    for t, s in zip(seen["teacher"], seen["student"], strict=True):
        assert torch.equal(t, s)


def test_the_teacher_output_store_is_refused_with_unlabelled_images_or_mixup(
    capsys: Any, tmp_path: Path
) -> None:
    teacher = tmp_path / "t.safetensors"
    digits_teacher(teacher)
    base = ["distill", "--teacher", teacher, "--arch", "resnet8", "--dataset", "digits",
            "--device", "cpu", "--teacher-cache", tmp_path / "store"]  # fmt: skip
    why = (
        "the teacher must run live on exactly the view the student sees (a fixed target is "
        "what function matching argues against); drop --teacher-cache"
    )
    for extra, given in [
        (["--labels-per-class", "5"], "unlabelled images"),
        (["--unlabeled-dir", tmp_path], "unlabelled images"),
        (["--mixup", "0.2"], "--mixup"),
    ]:
        r = icckd(capsys, *base, *extra, "--out", tmp_path / "s")
        assert r.code == USAGE
        assert r.err.strip() == (
            f"error: invalid settings: --teacher-cache cannot serve {given}: {why}"
        )
        assert not (tmp_path / "s").exists() and not (tmp_path / "store").exists()


# ----------------------------------------------------------------------------- experiments

FEW_LABELS = """[[students]]
name = "kd-labelled"
method = "kd"
unlabeled_ratio = 0  # the labelled images alone

[[students]]
name = "kd-unlabeled"
method = "kd"
unlabeled_dir = "{extra}"
mixup = 0.2
"""


@pytest.mark.slow
def test_an_experiment_with_few_labels_resumes_and_then_skips_every_run(
    capsys: Any, tmp_path: Path
) -> None:
    _images(tmp_path / "extra", 12)
    config = tmp_path / "few.toml"
    students = FEW_LABELS.format(extra=tmp_path / "extra")
    config.write_text(
        tiny_experiment(
            tmp_path,
            ("seeds = [0, 1]", "seeds = [0]"),
            ("baseline = true", "baseline = true\nlabels_per_class = 5"),
            ('[[students]]\nmethod = "kd"\n', students),
        )
    )
    exp = load_experiment(config)
    by_label = {r.label: r for r in exp.runs}
    assert len(exp.runs) == 7
    for label in ("students/ce/kd-labelled/seed0", "students/ce/kd-unlabeled/seed0"):
        cfg = by_label[label].config
        assert cfg.labels_per_class == 5 and cfg.teacher_cache is None  # its teacher runs live
    baseline = by_label["baseline/seed0"].config
    assert baseline.train_per_class == 5  # alone: the labelled images only
    runs_seen: list[dict[str, Any]] = []

    def ctrl_c_in_the_unlabeled_student(event: str, info: dict[str, Any]) -> None:
        if event == "run":
            runs_seen.append(info)
        if event == "step" and "kd-unlabeled" in runs_seen[-1]["label"] and info["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        run_experiment(exp, ctrl_c_in_the_unlabeled_student)
    student = tmp_path / "exp/students/ce/kd-unlabeled/seed0"
    assert (student / "state.safetensors").is_file() and not (
        student / "model.safetensors"
    ).exists()
    r = icckd(capsys, "experiment", config)
    assert r.code == 0, r.err
    assert "students/ce/kd-unlabeled/seed0: resuming" in r.err
    assert r.err.count("finished already, skipped") == 3  # the two teachers and kd-labelled
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "exp").rglob("model.safetensors")}
    assert len(before) == 7
    r = icckd(capsys, "experiment", config)
    assert r.code == 0, r.err
    assert r.err.count("finished already, skipped") == 7 and "training" not in r.err
    results = json.loads((tmp_path / "exp/results.json").read_text())
    labels = {s["student"]: s["labels"] for s in results["students"]}
    assert labels == {
        "kd-labelled": "5 per class labelled, the rest unused",
        "kd-unlabeled": "5 per class labelled, the rest and an extra folder unlabelled",
    }
    assert "kd-unlabeled (kd); 5 per class labelled" in (tmp_path / "exp/results.md").read_text()
    assert "(students see 20 training images per class, some without labels: see the " in r.out
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_a_ratio_without_unlabelled_images_is_refused_in_one_line(
    capsys: Any, tmp_path: Path
) -> None:
    r = icckd(capsys, "distill", "--teacher", tmp_path / "t.safetensors", "--dataset", "digits",
              "--unlabeled-ratio", "0.5", "--out", tmp_path / "s")  # fmt: skip
    assert r.code == USAGE
    assert r.err.strip() == (
        "error: invalid settings: --unlabeled-ratio 0.5 needs unlabelled images; add "
        "--labels-per-class N or --unlabeled-dir DIR"
    )
    assert not (tmp_path / "s").exists()


def test_unlabelled_images_with_a_long_tail_are_refused_before_any_data_loads(
    capsys: Any, tmp_path: Path
) -> None:
    r = icckd(capsys, "distill", "--teacher", tmp_path / "t.safetensors", "--dataset", "digits",
              "--labels-per-class", "5", "--imbalance-factor", "10",
              "--out", tmp_path / "s")  # fmt: skip
    assert r.code == USAGE
    assert r.err.strip() == (
        "error: invalid settings: --imbalance-factor cannot be combined with unlabelled "
        "images yet; drop one"
    )
