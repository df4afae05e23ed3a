"""End-to-end runs of every command on tiny slices of the embedded digits data set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from icckd_cli.base.checkpoint import read_metadata
from tests.helpers import TINY, Result, digits_teacher, icckd


def _train(capsys: pytest.CaptureFixture[str], out: Path, *extra: str) -> None:
    r = icckd(capsys, "train-teacher", "--arch", "resnet8", "--epochs", "1", "--out", out,
              *TINY, *extra)  # fmt: skip
    assert r.code == 0, r.err
    assert (out / "model.safetensors").is_file()


def test_train_teacher_writes_checkpoint_metrics_and_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "icc"
    _train(capsys, out, "--icc-weight", "0.1", "--margin", "-1", "--queue-size", "8")
    meta = safe_open(str(out / "model.safetensors"), "pt").metadata()
    assert meta["format"] == "icckd" and meta["kind"] == "teacher" and meta["arch"] == "resnet8"
    assert meta["num_classes"] == "10"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    # every loss part by name, and the gate and cache statistics
    for key in ("train_loss", "train_ce", "train_icc", "train_icc_gate_pass", "train_icc_negatives",
                "top1", "top5", "nll", "ece"):  # fmt: skip
        assert key in record
    assert record["train_icc_gate_pass"] == 1.0  # --margin -1 turns the gate off
    assert record["train_icc_negatives"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["icc_weight"] == 0.1 and config["lr_decay_epochs"] == []
    objective = json.loads(meta["objective"])
    assert objective["terms"] == {"ce": 1.0, "icc": 0.1} and objective["views"] == 2


def test_cross_entropy_teacher_uses_one_view(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "ce"
    _train(capsys, out, "--icc-weight", "0")
    objective = json.loads(safe_open(str(out / "model.safetensors"), "pt").metadata()["objective"])
    assert objective["terms"] == {"ce": 1.0} and objective["views"] == 1


def test_label_smoothing_is_recorded_in_the_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "ls"
    _train(capsys, out, "--icc-weight", "0", "--label-smoothing", "0.1")
    meta = safe_open(str(out / "model.safetensors"), "pt").metadata()
    assert json.loads(meta["config"])["label_smoothing"] == 0.1
    assert json.loads(meta["objective"])["label_smoothing"] == 0.1


def _json_run(
    capsys: pytest.CaptureFixture[str], out: Path, *extra: str
) -> tuple[Result, list[dict[str, Any]]]:
    """A cross-entropy resnet8 run with --format json: its summary and metrics.jsonl."""
    r = icckd(capsys, "train-teacher", "--arch", "resnet8", "--icc-weight", "0", "--out", out,
              *TINY, "--format", "json", *extra)  # fmt: skip
    assert r.code == 0, r.err
    return r, [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_eval_every_evaluates_every_nth_and_the_last_epoch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "sparse"
    r, records = _json_run(capsys, out, "--epochs", "3", "--eval-every", "2")
    assert [("top1" in rec) for rec in records] == [False, True, True]
    best = json.loads(safe_open(str(out / "model.safetensors"), "pt").metadata()["metrics"])["best"]
    assert best["epoch"] in (2, 3)
    assert r.json()["top1"] == records[-1]["top1"]


def test_validation_split_picks_best_and_is_recorded(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "val"
    r, records = _json_run(capsys, out, "--epochs", "2", "--val-per-class", "4")
    assert all({"val_top1", "val_nll", "val_top5", "val_ece", "top1"} <= set(x) for x in records)
    assert f"val {records[0]['val_top1']:.2f}" in r.err  # the epoch lines show it
    # 40 held-out images: every validation top-1 is a whole number of them
    assert all(abs(x["val_top1"] * 40 / 100 - round(x["val_top1"] * 40 / 100)) < 1e-6
               for x in records)  # fmt: skip
    chosen = max(records, key=lambda x: (x["val_top1"], -x["epoch"]))  # the earliest best
    summary = r.json()
    assert summary["best"]["epoch"] == chosen["epoch"] and summary["best"]["chosen_on"] == "val"
    assert summary["best"]["top1"] == chosen["top1"]  # the test split at that epoch
    assert summary["best"]["val_top1"] == chosen["val_top1"]
    assert summary["top1"] == records[-1]["top1"] and summary["val_top1"] == records[-1]["val_top1"]
    assert summary["validation"] == {
        "val_per_class": 4, "val_fraction": None, "images": 40, "train_images": 200
    }  # fmt: skip
    meta = read_metadata(out / "model.safetensors")
    assert meta["metrics"]["best"] == summary["best"]
    assert meta["metrics"]["validation"] == summary["validation"]
    assert meta["config"]["val_per_class"] == 4 and meta["config"]["val_fraction"] is None
    assert json.loads((out / "config.json").read_text())["val_per_class"] == 4
    # eval finds the same held-out images again from the recorded setting
    r = icckd(capsys, "eval", out / "model.safetensors", "--split", "val", "--device", "cpu",
              "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    assert r.json()["n"] == 40 and r.json()["top1"] == pytest.approx(records[-1]["val_top1"])
    r = icckd(capsys, "eval", out / "model.safetensors", "--split", "train", "--device", "cpu",
              "--format", "json")  # fmt: skip
    assert r.json()["n"] == 200  # the training images, without the held-out ones
    # the table after training says what best was chosen on
    from icckd_cli.commands.runs import RunResult
    from icckd_cli.presentation.tables import run_summary

    capsys.readouterr()
    final = {k: summary[k] for k in ("top1", "top5", "nll", "ece")}
    run_summary("teacher", RunResult(out, out, final, summary["best"], [], 1, 1.0))
    table = capsys.readouterr().out
    assert f"epoch {chosen['epoch']} (val top-1 {chosen['val_top1']:.2f})" in table
    assert f"top-1 at best-val epoch   {chosen['top1']:.2f}" in " ".join(table.split("│"))


def test_validation_images_do_not_depend_on_the_seed(tmp_path: Path) -> None:
    from icckd_cli.commands.runs import load_data
    from icckd_cli.settings.config import TrainTeacherConfig, build

    def held(**kw: object) -> object:
        settings = {"dataset": "digits", "val_fraction": 0.05, "out": tmp_path, **kw}
        return load_data(build(TrainTeacherConfig, settings), torch.device("cpu")).val

    a, b = held(seed=0), held(seed=7, train_per_class=10)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("method", ["kd", "rkd", "kd+rkd", "dkd", "crd"])
def test_distill_every_method_end_to_end(
    method: str, capsys: pytest.CaptureFixture[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.getbasetemp() / "shared-teacher"
    teacher = root / "model.safetensors"
    if not teacher.exists():
        _train(capsys, root, "--icc-weight", "0.05")
    out = tmp_path_factory.mktemp(f"student-{method.replace('+', '-')}")
    r = icckd(capsys, "distill", "--teacher", teacher, "--arch", "resnet8", "--method", method,
              "--epochs", "1", "--out", out, *TINY, "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    assert 0.0 <= r.json()["top1"] <= 100.0
    meta = safe_open(str(out / "model.safetensors"), "pt").metadata()
    assert meta["kind"] == "student"
    info = json.loads(meta["teacher"])
    assert info["arch"] == "resnet8" and len(info["sha256"]) == 64
    terms = json.loads(meta["objective"])["terms"]
    expected = {"kd": {"ce", "kd"}, "rkd": {"ce", "rkd"}, "kd+rkd": {"ce", "kd", "rkd"},
                "dkd": {"ce", "dkd"}, "crd": {"ce", "crd"}}[method]  # fmt: skip
    assert set(terms) == expected
    # the feature heads of RKD/CRD train with the student but are not saved with it
    keys = set(safe_open(str(out / "model.safetensors"), "pt").keys())
    assert not any(k.startswith(("crd", "embed")) for k in keys)
    ev = icckd(capsys, "eval", out / "model.safetensors", "--format", "json")
    assert ev.code == 0, ev.err
    got = ev.json()
    assert {"top1", "top5", "nll", "ece", "params"} <= set(got)
    assert got["params"] == 78042  # resnet8 at 10 classes: 83,892 - 90 * 65


def test_explicit_weight_overrides_preset(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    teacher = tmp_path / "t"
    _train(capsys, teacher, "--icc-weight", "0")
    out = tmp_path / "s"
    r = icckd(capsys, "distill", "--teacher", teacher / "model.safetensors", "--arch", "resnet8",
              "--method", "kd", "--kd-weight", "0", "--rkd-weight", "2", "--epochs", "1",
              "--out", out, *TINY)  # fmt: skip
    assert r.code == 0, r.err
    terms = json.loads(safe_open(str(out / "model.safetensors"), "pt").metadata()["objective"])
    assert terms["terms"] == {"ce": 0.1, "rkd": 2.0}


def test_eval_table_and_inspect_side_by_side(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a, b = tmp_path / "ce", tmp_path / "icc"
    _train(capsys, a, "--icc-weight", "0")
    _train(capsys, b, "--icc-weight", "0.2", "--margin", "-1")
    r = icckd(capsys, "eval", a / "model.safetensors")
    assert r.code == 0 and "top-1" in r.out
    r = icckd(capsys, "inspect-softlabels", a / "model.safetensors", b / "model.safetensors",
              "--format", "json", "--plot", tmp_path / "fig")  # fmt: skip
    assert r.code == 0, r.err
    got = r.json()
    assert [c["name"] for c in got["checkpoints"]] == ["ce", "icc"]
    assert got["temperature"] == 4.0 and got["split"] == "test"
    for c in got["checkpoints"]:
        o = c["overall"]
        assert o["samples"] == 50  # 5 test images x 10 classes
        assert o["ratio"] == pytest.approx(o["intra_distance"] / o["inter_distance"])
    assert len(got["figures"]) == 3 and all(Path(f).is_file() for f in got["figures"])
    r = icckd(capsys, "inspect-softlabels", a / "model.safetensors", b / "model.safetensors",
              "--per-class")  # fmt: skip
    assert r.code == 0 and "intra / inter" in r.out and "per class" in r.out


def test_models_lists_the_zoo(capsys: pytest.CaptureFixture[str]) -> None:
    r = icckd(capsys, "models", "--format", "json")
    assert r.code == 0
    rows = {m["arch"]: m["params"] for m in r.json()}
    assert len(rows) == 27 and rows["resnet56"] == 861_620
    sizes = {m["arch"]: m["input_size"] for m in r.json()}
    assert sizes["resnet56"] == 32 and sizes["tv_resnet34"] == sizes["MobileNetV1"] == 224
    assert rows["tv_resnet18"] == 11_227_812  # torchvision's ResNet-18 with a 100-way head


@pytest.mark.slow
def test_resnet8_learns_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The issue's acceptance run: resnet8, full digits, 10 epochs, a real accuracy."""
    out = tmp_path / "full"
    r = icckd(capsys, "train-teacher", "--arch", "resnet8", "--dataset", "digits", "--epochs",
              "10", "--icc-weight", "0", "--device", "cpu", "--out", out)  # fmt: skip
    assert r.code == 0, r.err
    ev = icckd(capsys, "eval", out / "model.safetensors", "--format", "json")
    # 98.6 on one machine (96.9 once the rate decays at epoch 7, 65 before it); chance is 10.
    # 90 leaves 8 points, 31 of the 360 test images, for another CPU's training order: a run
    # that learnt passes wherever it runs, one that did not fails everywhere.
    assert ev.json()["top1"] > 90.0


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from icckd_cli import __version__

    r = icckd(capsys, "--version")
    assert r.code == 0 and r.out.strip() == f"icckd {__version__}"


def test_distill_without_dataset_trains_on_the_teachers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A new user's `distill --teacher T`: the data set recorded in T, not CIFAR-100."""
    teacher = tmp_path / "t.safetensors"
    digits_teacher(teacher)
    out = tmp_path / "s"
    r = icckd(capsys, "distill", "--teacher", teacher, "--out", out, "--epochs", "1",
              "--arch", "resnet8", "--train-per-class", "10", "--test-per-class", "3",
              "--batch-size", "16", "--device", "cpu", "--no-download")  # fmt: skip
    assert r.code == 0, r.err
    meta = read_metadata(out / "model.safetensors")
    assert meta["dataset"]["name"] == "digits" and meta["num_classes"] == 10
    assert meta["config"]["dataset"] == "digits"


def _image_folder(root: Path, classes: int = 3, train: int = 6, test: int = 2) -> Path:
    """Generated 64x64 PNGs, one colour family per class: root/{train,test}/<class>/*.png."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 64, (64, 64, 3)) + np.eye(3, dtype=int)[c] * 190
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_torchvision_pth_teacher_distills_into_tv_resnet18(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A torchvision ResNet-34 saved as .pth teaches a tv_resnet18 on 64 px images, end to end."""
    import torch
    import torchvision

    torch.manual_seed(0)
    teacher = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(num_classes=3).state_dict(), teacher)
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "student"
    r = icckd(capsys, "distill", "--teacher", teacher, "--teacher-arch", "tv_resnet34",
              "--arch", "tv_resnet18", "--dataset", "imagefolder", "--data-dir", data,
              "--epochs", "1", "--batch-size", "9", "--device", "cpu", "--out", out,
              "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    meta = read_metadata(out / "model.safetensors")
    assert (meta["arch"], meta["num_classes"], meta["dataset"]["image_size"]) == (
        "tv_resnet18", 3, 64,
    )  # fmt: skip
    assert meta["teacher"]["arch"] == "tv_resnet34" and meta["teacher"]["kind"] == "pth"
    ev = icckd(capsys, "eval", out / "model.safetensors", "--format", "json")
    assert ev.code == 0, ev.err
    got = ev.json()
    assert (got["arch"], got["dataset"], got["n"]) == ("tv_resnet18", "imagefolder", 6)
    assert 0.0 <= got["top1"] <= 100.0


def test_inspect_columns_are_named_by_the_shortest_distinct_end_of_each_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Two runs whose paths differ only deep down: each column can be told apart (issue 27)."""
    deep = tmp_path / ("a-long-folder-name-that-fills-a-column-" * 3) / "exp" / "teachers"
    paths = [deep / method / "seed0" / "model.safetensors" for method in ("ce", "icc")]
    for path in paths:
        path.parent.mkdir(parents=True)
        digits_teacher(path)
    r = icckd(capsys, "inspect-softlabels", *paths, "--device", "cpu")
    assert r.code == 0, r.err
    header = next(line for line in r.out.splitlines() if "statistic" in line)
    assert header.split("┃")[2:4] == [" ce/seed0 ", " icc/seed0 "]
    # the full paths once, below the table
    assert r.out.splitlines()[-2:] == [f"  ce/seed0: {paths[0]}", f"  icc/seed0: {paths[1]}"]
    r = icckd(capsys, "inspect-softlabels", *paths, "--device", "cpu", "--format", "json")
    assert [c["name"] for c in r.json()["checkpoints"]] == ["ce/seed0", "icc/seed0"]


# every command's --help, rendered in a fresh interpreter at a given terminal width
HELP_SCRIPT = """
import contextlib, io, json, typer
from icckd_cli.cli import app
group = typer.main.get_command(app)
shown = {}
for name, command in group.commands.items():
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        group.main([name, "--help"], prog_name="icckd", standalone_mode=False)
    names = [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o[:2] == "--"]
    shown[name] = {"help": buffer.getvalue(), "options": names}
print(json.dumps(shown))
"""


@pytest.mark.parametrize("columns", [80, 100])
def test_every_commands_help_shows_every_option_name_whole(columns: int) -> None:
    import os
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", HELP_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    shown = json.loads(done.stdout)
    assert len(shown) == 11 and "distill" in shown
    for command, got in shown.items():
        text = got["help"]
        assert "…" not in text, (command, columns)  # nothing cut short
        assert max(map(len, text.splitlines())) <= columns, (command, columns)
        for option in got["options"]:  # whole: not followed by more of a name
            assert re.search(re.escape(option) + r"(?![\w-])", text), (command, option, columns)
    assert len(shown["distill"]["options"]) > 50  # the longest help: every option counted


def test_an_aborted_command_is_one_line_and_exit_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    import icckd_cli.cli as cli

    def aborts(**kwargs: Any) -> None:
        raise typer.Abort()  # what click raises when a prompt gets Ctrl-D

    monkeypatch.setattr(cli, "app", aborts)
    r = icckd(capsys, "models")
    assert (r.code, r.out, r.err.strip()) == (130, "", "error: aborted")

    class Abort(RuntimeError):  # another exception of the same name is no abort
        pass

    def other(**kwargs: Any) -> None:
        raise Abort()

    monkeypatch.setattr(cli, "app", other)
    with pytest.raises(Abort):
        icckd(capsys, "models")
