"""The catalogue of bad inputs: each is one line on stderr, its exit code, nothing touched.

Most entries run the real CLI in-process (`icckd_cli.cli.main` with sys.argv patched);
a few run `python -m icckd_cli` in a subprocess, exactly as a user would.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import (
    RUNTIME,
    USAGE,
    check_fails,
    digits_teacher,
    icckd,
    one_error,
    tiny_experiment,
)
from tests.helpers import (
    TINY_ERRORS as TINY,
)

Fails = Callable[..., str]


@pytest.fixture
def fails(capsys: pytest.CaptureFixture[str]) -> Fails:
    """check_fails with capsys bound: fails(root, code, *args, says=...)."""
    return functools.partial(check_fails, capsys)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a good digits teacher and damaged or foreign files beside it."""
    root = tmp_path_factory.mktemp("files")
    model = digits_teacher(root / "teacher.safetensors")
    good = (root / "teacher.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (root / "short.safetensors").write_bytes(good[:5])
    (root / "corrupt.safetensors").write_bytes(good[:20] + b"\xff" * 40 + good[60:])
    (root / "notes.safetensors").write_text("these are my notes, not a checkpoint\n")
    (root / "huge.safetensors").write_bytes(struct.pack("<Q", 2**40) + b'{"a": 1}')
    torch.save(model.state_dict(), root / "renamed.safetensors")  # a .pth under another name
    torch.save({"model": model.state_dict(), "why": zipfile.ZipInfo("x")}, root / "code.pth")
    torch.save(model.state_dict(), root / "resnet8.pth")
    return root


def make_imagefolder(root: Path, classes: list[str], per_class: int = 2) -> Path:
    """A tiny train/ + test/ ImageFolder of 32x32 PNGs."""
    for split in ("train", "test"):
        for i, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for j in range(per_class):
                Image.new("RGB", (32, 32), (20 * i, 10 * j + 7 * i, 100 + 40 * j + 9 * i)).save(
                    folder / f"{j}.png"
                )
    return root


# ----------------------------------------------------------------------------- checkpoints

BAD_FILES = [
    ("missing.safetensors", USAGE, "does not exist"),
    ("truncated.safetensors", RUNTIME, "is truncated"),
    ("short.safetensors", RUNTIME, "too short"),
    ("corrupt.safetensors", RUNTIME, "has a damaged header"),
    ("notes.safetensors", RUNTIME, "is not a safetensors file"),
    ("huge.safetensors", RUNTIME, "over the 104,857,600-byte limit"),
    ("renamed.safetensors", RUNTIME, "is a PyTorch pickle (.pth) file"),
]


@pytest.mark.parametrize(("name", "code", "says"), BAD_FILES)
def test_eval_of_a_bad_checkpoint(
    fails: Fails, files: Path, name: str, code: int, says: str
) -> None:
    fails(files, code, "eval", files / name, "--device", "cpu", says=(name, says))


@pytest.mark.parametrize(("name", "code", "says"), BAD_FILES)
def test_bad_teacher_file(
    fails: Fails, files: Path, tmp_path: Path, name: str, code: int, says: str
) -> None:
    out = tmp_path / "run"
    fails(tmp_path, code, "distill", "--teacher", files / name, *TINY, "--out", out, says=says)
    assert not out.exists()


def test_pickled_code_is_never_loaded(fails: Fails, files: Path, tmp_path: Path) -> None:
    args = ["--teacher", files / "code.pth", "--teacher-arch", "resnet8", "--out", tmp_path / "r"]
    line = fails(tmp_path, RUNTIME, "distill", *args, *TINY)
    assert "never unpickles code" in line


def test_pth_without_architecture(fails: Fails, files: Path, tmp_path: Path) -> None:
    args = ["--teacher", files / "resnet8.pth", "--out", tmp_path / "r"]
    fails(tmp_path, USAGE, "distill", *args, *TINY, says="--teacher-arch NAME")
    # eval has no architecture option, so it says where a .pth file can be used instead
    fails(files, USAGE, "eval", files / "resnet8.pth", says="distill --teacher FILE.pth")


def test_pth_of_another_architecture(fails: Fails, files: Path, tmp_path: Path) -> None:
    args = ["--teacher", files / "resnet8.pth", "--teacher-arch", "resnet14"]
    line = fails(tmp_path, RUNTIME, "distill", *args, "--out", tmp_path / "r", *TINY)
    assert "does not fit a resnet14" in line


def test_teacher_of_another_architecture(fails: Fails, files: Path, tmp_path: Path) -> None:
    args = ["--teacher", files / "teacher.safetensors", "--teacher-arch", "resnet20"]
    line = fails(tmp_path, USAGE, "distill", *args, "--out", tmp_path / "r", *TINY)
    assert "holds a resnet8, not the resnet20 asked for with --teacher-arch" in line


def test_init_of_another_architecture(fails: Fails, files: Path, tmp_path: Path) -> None:
    args = ["--init", files / "teacher.safetensors", "--arch", "resnet14"]
    line = fails(tmp_path, USAGE, "train-teacher", *args, "--out", tmp_path / "r", *TINY)
    assert "pass --arch resnet8" in line


def test_teacher_and_data_set_with_other_classes(fails: Fails, files: Path, tmp_path: Path) -> None:
    two = make_imagefolder(tmp_path / "two", ["cat", "dog"])
    ten = make_imagefolder(tmp_path / "ten", [f"c{i}" for i in range(10)], per_class=1)
    teacher = ["--teacher", files / "teacher.safetensors", "--arch", "resnet8"]
    common = ["--dataset", "imagefolder", "--epochs", "1", "--device", "cpu"]
    line = fails(tmp_path, USAGE, "distill", *teacher, *common, "--data-dir", two)
    assert "predicts 10 classes but data set 'imagefolder' has 2" in line
    line = fails(tmp_path, USAGE, "distill", *teacher, *common, "--data-dir", ten)
    assert "was trained on other classes (0, 1, 2, 3...)" in line
    # eval on a data set it was not trained on: the same check
    args = ["--dataset", "imagefolder", "--data-dir", two, "--device", "cpu"]
    fails(tmp_path, USAGE, "eval", files / "teacher.safetensors", *args, says="has 2")


# ----------------------------------------------------------------------------- data


def test_data_directory_missing(fails: Fails, tmp_path: Path) -> None:
    args = ["--dataset", "imagefolder", "--data-dir", tmp_path / "nowhere", "--out", tmp_path]
    fails(tmp_path, USAGE, "train-teacher", *args, says="does not exist")


def test_data_directory_empty(fails: Fails, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    args = ["--dataset", "imagefolder", "--data-dir", tmp_path / "empty"]
    line = fails(tmp_path, USAGE, "train-teacher", *args, "--out", tmp_path / "r")
    assert "must hold train/ and test/ (or val/) folders" in line


def test_data_directory_of_another_layout(fails: Fails, tmp_path: Path) -> None:
    # images straight under train/ and test/, without class folders
    for split in ("train", "test"):
        (tmp_path / "flat" / split).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "flat" / split / "0.png")
    args = ["--dataset", "imagefolder", "--data-dir", tmp_path / "flat"]
    line = fails(tmp_path, USAGE, "train-teacher", *args, "--out", tmp_path / "r")
    assert "holds 0 class folder(s) with images; it needs at least 2" in line


def test_imagefolder_without_data_dir(fails: Fails, tmp_path: Path) -> None:
    args = ["--dataset", "imagefolder", "--out", tmp_path / "r"]
    fails(tmp_path, USAGE, "train-teacher", *args, says="needs --data-dir DIR")


def test_download_needed_without_network(fails: Fails, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    args = ["--dataset", "cifar100", "--no-download", "--data-dir", tmp_path / "empty"]
    line = fails(tmp_path, RUNTIME, "train-teacher", *args, "--out", tmp_path / "r")
    assert "cifar100 is not in" in line and "--no-download forbids fetching it" in line


def test_unknown_data_set_with_suggestion(fails: Fails, tmp_path: Path) -> None:
    line = fails(tmp_path, USAGE, "train-teacher", "--dataset", "cifar1000", "--out", tmp_path)
    assert "unknown data set 'cifar1000'. Did you mean: cifar100, cifar10?" in line


def test_unknown_architecture_with_suggestion(fails: Fails, tmp_path: Path) -> None:
    args = ["--arch", "resnet9", *TINY, "--out", tmp_path / "r"]
    line = fails(tmp_path, USAGE, "train-teacher", *args)
    assert "unknown architecture 'resnet9'. Did you mean: resnet8" in line


# ----------------------------------------------------------------------------- settings

BAD_SETTINGS = [
    (["--epochs", "0"], "invalid value for --epochs (0): Input should be greater than or equal"),
    (["--batch-size", "0"], "invalid value for --batch-size (0): Input should be greater than"),
    (["--lr", "-0.1"], "invalid value for --lr (-0.1): Input should be greater than 0"),
    (["--weight-decay", "-1"], "invalid value for --weight-decay (-1.0): Input should be"),
    (["--icc-weight", "-0.5"], "invalid value for --icc-weight (-0.5): Input should be"),
    (["--icc-temperature", "0"], "invalid value for --icc-temperature (0.0): Input should be"),
    (["--margin", "1"], "invalid value for --margin (1.0): Input should be less than 1"),
    (["--queue-size", "-1"], "invalid value for --queue-size (-1): Input should be greater"),
    (["--embedding", "pixels"], "invalid value for --embedding ('pixels'): Input should be"),
    (["--epochs", "10", "--lr-decay-epochs", "8,6"], "strictly increasing"),
    (["--epochs", "10", "--lr-decay-epochs", "6,12"], "ends at 12, beyond the last epoch (10)"),
    (["--lr-decay-epochs", "6,x"], "invalid value for --lr-decay-epochs ('6,x')"),
    (["--optimizer", "rmsprop"],
     "error: invalid value for --optimizer ('rmsprop'): Input should be 'sgd' or 'adamw'"),
    (["--schedule", "linear"],
     "error: invalid value for --schedule ('linear'): Input should be 'step' or 'cosine'"),
    (["--epochs", "10", "--warmup-epochs", "11"],
     "error: invalid value for --warmup-epochs (11): beyond the last epoch (10); give at most "
     "--epochs"),
    (["--epochs", "10", "--schedule", "cosine", "--lr-decay-epochs", "5,8"],
     "error: invalid value for --lr-decay-epochs (5,8): the cosine schedule has no decay epochs; "
     "drop --lr-decay-epochs or pass --schedule step"),
    (["--epochs", "many"], "Invalid value for '--epochs'"),
    (["--val-fraction", "1"], "invalid value for --val-fraction (1.0): Input should be less"),
    (["--val-per-class", "0"], "invalid value for --val-per-class (0): Input should be greater"),
    (["--val-per-class", "5", "--val-fraction", "0.1"],
     "invalid value for --val-fraction (0.1): --val-per-class (5) is given too; hold out by one "
     "of the two"),
    (["--frobnicate"], "No such option: --frobnicate"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "says"), BAD_SETTINGS, ids=lambda v: " ".join(v)[:30])
def test_impossible_settings(fails: Fails, tmp_path: Path, args: list[str], says: str) -> None:
    fails(tmp_path, USAGE, "train-teacher", *args, "--out", tmp_path / "r", says=says)
    assert not (tmp_path / "r").exists()


def test_distill_setting(fails: Fails, tmp_path: Path, files: Path) -> None:
    args = ["--teacher", files / "teacher.safetensors", "--kd-weight", "-1", "--out", tmp_path]
    fails(tmp_path, USAGE, "distill", *args, says="invalid value for --kd-weight (-1.0)")


def test_config_file_with_unknown_key(fails: Fails, tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text("epochs = 2\nicc_wieght = 0.1\n")
    args = ["--config", tmp_path / "run.toml", "--out", tmp_path / "r"]
    line = fails(tmp_path, USAGE, "train-teacher", *args)
    assert "unknown setting 'icc_wieght' in" in line and "Did you mean: icc_weight?" in line


def test_config_file_missing_or_not_toml(fails: Fails, tmp_path: Path) -> None:
    out = ["--out", tmp_path / "r"]
    fails(tmp_path, USAGE, "train-teacher", "--config", tmp_path / "no.toml", *out)
    (tmp_path / "bad.toml").write_text("epochs = = 2\n")
    line = fails(tmp_path, USAGE, "train-teacher", "--config", tmp_path / "bad.toml", *out)
    assert "is not valid TOML" in line


@pytest.mark.parametrize(
    ("replace", "says"),
    [
        (('method = "kd"', 'method = "kd"\ntrain_per_class = 5'),
         "[[students]] 'kd': 'train_per_class' belongs in [student] or [experiment] (every "
         "student of an experiment trains on the same images)"),
        (("baseline = true", "baseline = true\ntest_per_class = 2"),
         "[student]: 'test_per_class' belongs in [experiment] (runs that are compared must be "
         "evaluated on the same test images)"),
        (("icc_weight = 0\n", "icc_weight = 0\nval_per_class = 5\n"),
         "[[teachers]] 'ce': 'val_per_class' belongs in [experiment] (every run of an experiment "
         "must pick its best epoch on the same validation images)"),
        (("baseline = true", "baseline = true\nval_fraction = 0.1"),
         "[student]: 'val_fraction' belongs in [experiment] (every run of an experiment must "
         "pick its best epoch on the same validation images)"),
    ],
)  # fmt: skip
def test_experiment_subset_in_the_wrong_table(
    fails: Fails, tmp_path: Path, replace: tuple[str, str], says: str
) -> None:
    config = tmp_path / "x.toml"
    config.write_text(tiny_experiment(tmp_path, replace))
    line = fails(tmp_path, USAGE, "experiment", config)
    assert line == f"error: {config}: {says}"


# ----------------------------------------------------------------------------- validation


def test_validation_split_that_empties_a_class(fails: Fails, tmp_path: Path) -> None:
    from icckd_cli.data import load_dataset

    n = int(torch.bincount(load_dataset("digits").train.labels)[0])
    args = [*TINY, "--val-per-class", "200", "--out", tmp_path / "r"]
    line = fails(tmp_path, USAGE, "train-teacher", *args)
    assert line == (
        f"error: --val-per-class 200 holds out 200 of the {n} training images of class '0' "
        "and leaves it none to train on; lower --val-per-class"
    )


def test_experiment_runs_made_with_another_validation_split(fails: Fails, tmp_path: Path) -> None:
    from icckd_cli.commands.inputs import resolved_config
    from tests.helpers import parse_experiment_text

    # a finished teacher of the same experiment, made without a validation split
    done = parse_experiment_text(tiny_experiment(tmp_path)).runs[0]
    done.out.mkdir(parents=True)
    (done.out / "config.json").write_text(json.dumps(resolved_config(done.config)))
    (done.out / "model.safetensors").write_bytes(b"")
    config = tmp_path / "x.toml"
    config.write_text(
        tiny_experiment(tmp_path, ('name = "tiny"', 'name = "tiny"\nval_per_class = 2'))
    )
    line = fails(tmp_path, USAGE, "experiment", config)
    assert line == (
        f"error: {done.out} was run with val_per_class = None but the experiment now asks for "
        "2; delete that folder to redo it, or choose another out"
    )


def test_eval_of_the_validation_split_of_a_run_without_one(fails: Fails, files: Path) -> None:
    ckpt = files / "teacher.safetensors"
    line = fails(files, USAGE, "eval", ckpt, "--split", "val", "--device", "cpu")
    assert line == (
        f"error: {ckpt} was trained without a validation split (--val-per-class or "
        "--val-fraction), so there is none to evaluate; use --split test or train"
    )


def test_a_constant_channel_warns_in_one_line_and_trains(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for split in ("train", "test"):
        for c in range(2):
            for k in range(4):
                path = tmp_path / "data" / split / f"c{c}" / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (16, 16), (40 * k + 80 * c, 60 + 30 * k, 0)).save(path)
    out = tmp_path / "r"
    r = icckd(capsys, "train-teacher", "--dataset", "imagefolder", "--data-dir", tmp_path / "data",
              "--arch", "resnet8", "--epochs", "1", "--batch-size", "4", "--icc-weight", "0",
              "--device", "cpu", "--out", out, "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    warnings = [x for x in r.err.splitlines() if x.startswith("warning:")]
    assert warnings == [
        "warning: the blue channel of the imagefolder training images is constant (std 0, under "
        "one grey level); it is left unscaled (std 1) instead of dividing by ~0"
    ]
    record = json.loads((out / "metrics.jsonl").read_text())
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["nll"])


# ----------------------------------------------------------------------------- output, device


def test_output_under_a_regular_file(fails: Fails, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me\n")
    line = fails(tmp_path, USAGE, "train-teacher", *TINY, "--out", tmp_path / "notes.txt" / "run")
    assert "is a file, not a folder" in line
    fails(tmp_path, USAGE, "train-teacher", *TINY, "--out", tmp_path / "notes.txt")


def test_output_folder_not_writable(
    fails: Fails, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tests run as root, whom permission bits do not stop: pretend the parent is read-only
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    line = fails(tmp_path, RUNTIME, "train-teacher", *TINY, "--out", tmp_path / "run")
    assert "is not writable; choose a writable --out" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_where_there_is_none(fails: Fails, tmp_path: Path) -> None:
    args = [*TINY, "--device", "cuda", "--out", tmp_path / "r"]
    fails(tmp_path, USAGE, "train-teacher", *args, says="asked for CUDA but none is available")
    args = [*TINY, "--device", "tpu", "--out", tmp_path / "r"]
    fails(tmp_path, USAGE, "train-teacher", *args, says="unknown device 'tpu'")


# ----------------------------------------------------------------------------- as a user


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["eval", "truncated.safetensors"], RUNTIME),
        (["train-teacher", "--epochs", "0"], USAGE),
    ],
)
def test_real_console_script(files: Path, args: list[str], code: int) -> None:
    """`python -m icckd_cli` in a fresh process: no traceback, one line, the exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "icckd_cli", *args],
        cwd=files,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == code
    one_error(proc.stderr)
    assert proc.stdout == ""


# ----------------------------------------------------------------------------- any model


def test_unknown_library_model_suggests_close_names(fails: Fails, tmp_path: Path) -> None:
    line = fails(tmp_path, USAGE, "train-teacher", "--arch", "timm:vit_tiny_patch16_225", *TINY,
                 "--out", tmp_path / "r")  # fmt: skip
    assert line.startswith("error: unknown timm model 'timm:vit_tiny_patch16_225'. Did you mean: ")
    assert "timm:vit_tiny_patch16_224" in line and line.endswith("--family timm' to list them.")


def test_a_model_without_a_classification_head(fails: Fails, tmp_path: Path) -> None:
    fails(tmp_path, USAGE, "train-teacher", "--arch", "torchvision:squeezenet1_1", *TINY,
          "--out", tmp_path / "r",
          says="error: torchvision:squeezenet1_1 has no linear classification head")  # fmt: skip
    fails(tmp_path, USAGE, "distill", "--teacher", tmp_path / "t.pth", "--arch",
          "torchvision:raft_small", *TINY, "--out", tmp_path / "r",
          says="torchvision:raft_small is not an image classifier (it has no classification "
          "head)")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--arch", "timm:resnet18", "--model-arg", "frobnicate=1"],
         "error: timm:resnet18 cannot be built with frobnicate=1 (ResNet.__init__() got an "
         "unexpected keyword argument 'frobnicate'); fix or drop the --model-arg"),
        (["--arch", "resnet8", "--model-arg", "depth=2"],
         "error: resnet8 takes no --model-arg (got depth=2); builder arguments are for "
         "timm:<model> and torchvision:<builder> architectures: drop them"),
        (["--arch", "timm:resnet18", "--model-arg", "depth"],
         "error: invalid value for --model-arg ('depth'): give KEY=VALUE, e.g. --model-arg "
         "drop_path_rate=0.1"),
        (["--arch", "timm:resnet18", "--model-arg", "num_classes=3"],
         "error: invalid value for --model-arg (num_classes=3): the data set sets the number of "
         "classes"),
        (["--arch", "timm:vit_tiny_patch16_224", "--model-arg", "img_size=64",
          "--model-arg", "patch_size=8"],
         "error: timm:vit_tiny_patch16_224 takes 64x64 images but 'digits' has 32x32; pass "
         "--model-arg img_size=32"),
    ],
    ids=["rejected", "zoo", "syntax", "reserved", "size"],
)  # fmt: skip
def test_builder_arguments_that_do_not_fit(
    fails: Fails, tmp_path: Path, args: list[str], says: str
) -> None:
    fails(tmp_path, USAGE, "train-teacher", *args, *TINY, "--out", tmp_path / "r", says=says)
    assert not (tmp_path / "r").exists()


def test_weights_of_other_shapes_name_the_builder_arguments(fails: Fails, tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    net = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8)
    torch.save(net.state_dict(), tmp_path / "vit.pth")
    teacher = ["--teacher", tmp_path / "vit.pth", "--teacher-arch", "timm:vit_tiny_patch16_224"]
    line = fails(tmp_path, RUNTIME, "distill", *teacher, "--teacher-model-arg", "img_size=32",
                 "--teacher-model-arg", "patch_size=4", *TINY, "--out", tmp_path / "r")  # fmt: skip
    assert line == (
        f"error: {tmp_path}/vit.pth does not fit a timm:vit_tiny_patch16_224 with 10 classes: 0 "
        "missing keys, 0 unexpected, 2 of another shape (e.g. pos_embed: (1, 17, 192) in the "
        "file, (1, 65, 192) here); check the architecture and the number of classes and the "
        "builder arguments the weights were made with (--model-arg, or --teacher-model-arg for "
        "a teacher, e.g. img_size=32)"
    )
    # weights made at the library's default size (224) cannot see digits' 32x32 images
    big = timm.create_model("vit_tiny_patch16_224", num_classes=10, patch_size=32)
    torch.save(big.state_dict(), tmp_path / "vit224.pth")
    line = fails(tmp_path, USAGE, "distill", "--teacher", tmp_path / "vit224.pth", "--teacher-arch",
                 "timm:vit_tiny_patch16_224", "--teacher-model-arg", "patch_size=32", *TINY,
                 "--out", tmp_path / "r")  # fmt: skip
    assert line == (
        f"error: {tmp_path}/vit224.pth (timm:vit_tiny_patch16_224) takes 224x224 images but "
        "'digits' has 32x32; pass --teacher-model-arg img_size=32 (a weights file: only if its "
        "weights were made at that size) or use a data set of 224x224 images"
    )


def test_timm_missing_names_the_extra(
    fails: Fails, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icckd_cli.models import timm_adapter

    monkeypatch.setitem(sys.modules, "timm", None)
    timm_adapter.names.cache_clear()
    fails(tmp_path, USAGE, "train-teacher", "--arch", "timm:resnet18", *TINY,
          "--out", tmp_path / "r",
          says="error: timm:resnet18 needs the timm package; install it with pip install -e "
          "'.[timm]'")  # fmt: skip


def test_teacher_model_args_for_an_icckd_teacher(fails: Fails, files: Path, tmp_path: Path) -> None:
    fails(tmp_path, USAGE, "distill", "--teacher", files / "teacher.safetensors",
          "--teacher-model-arg", "img_size=32", *TINY, "--out", tmp_path / "r",
          says=f"error: {files}/teacher.safetensors records the builder arguments of its model; "
          "drop --teacher-model-arg (it is for weights files without icckd metadata)")  # fmt: skip
