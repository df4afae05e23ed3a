"""Any library model in the real commands: --model-arg, what checkpoints record, ViT runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from icckd_cli.base.checkpoint import read_metadata, weights_hash
from icckd_cli.cli.common import _literal, _model_args
from icckd_cli.settings.config import TrainTeacherConfig, build
from tests.helpers import digits_teacher, icckd, ok

timm = pytest.importorskip("timm")

VIT = "timm:vit_tiny_patch16_224"
DATA = ["--dataset", "digits", "--train-per-class", "3", "--test-per-class", "2",
        "--batch-size", "15", "--device", "cpu", "--no-tensorboard", "--epochs", "1"]  # fmt: skip
# a two-block ViT with 8x8 patches: a Transformer student that trains in a second
SMALL_VIT = ["--arch", VIT, "--model-arg", "patch_size=8", "--model-arg", "depth=2"]


def test_values_parse_as_literals() -> None:
    assert [_literal(v) for v in ("4", "0.1", "1e-3", "true", "False", "none")] == [
        4, 0.1, 1e-3, True, False, None,
    ]  # fmt: skip
    assert [_literal(v) for v in ("avg", "'token'", "[1, 2]", "(32, 32)")] == [
        "avg", "token", [1, 2], [32, 32],
    ]  # fmt: skip
    assert _model_args(["img_size=32", "global_pool=avg", "img_size=64"], "--model-arg") == {
        "img_size": 64, "global_pool": "avg",
    }  # fmt: skip


def test_command_line_args_add_to_the_config_files(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        'arch = "timm:resnet18"\nmodel_args = {drop_rate = 0.1, a = 1}\n'
    )
    cfg = build(TrainTeacherConfig, {"model_args": {"a": 2}}, tmp_path / "c.toml")
    assert cfg.model_args == {"drop_rate": 0.1, "a": 2}


@pytest.mark.slow
def test_vit_trains_as_an_intra_class_teacher_and_eval_rebuilds_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "vit"
    r = ok(capsys, "train-teacher", "--arch", VIT, "--model-arg", "patch_size=4", *DATA,
           "--icc-weight", "0.1", "--margin", "-1", "--out", out, "--format", "json")  # fmt: skip
    meta = read_metadata(out / "model.safetensors")
    # the data set's 32x32 went to img_size; both are recorded, and in config.json
    assert meta["arch"] == VIT and meta["model_args"] == {"patch_size": 4, "img_size": 32}
    assert json.loads((out / "config.json").read_text())["model_args"] == meta["model_args"]
    assert meta["objective"]["terms"]["icc"] == 0.1
    epoch = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert epoch["train_icc"] > 0 and epoch["train_icc_gate_pass"] == 1.0  # no gate: every anchor
    assert epoch["train_icc_negatives"] > 0
    ev = ok(capsys, "eval", out / "model.safetensors", "--format", "json").json()
    assert ev["arch"] == VIT and ev["top1"] == r.json()["top1"]  # exactly the trained model
    assert ev["params"] == r.json()["params"]


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_cnn_teacher_distills_into_a_vit_student(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, method: str
) -> None:
    digits_teacher(tmp_path / "t.safetensors")
    out = tmp_path / method
    ok(capsys, "distill", "--teacher", tmp_path / "t.safetensors", *SMALL_VIT, *DATA,
       "--method", method, "--out", out)  # fmt: skip
    meta = read_metadata(out / "model.safetensors")
    assert meta["arch"] == VIT and meta["teacher"]["arch"] == "resnet8"
    assert meta["model_args"] == {"patch_size": 8, "depth": 2, "img_size": 32}
    epoch = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert epoch[f"train_{method}"] > 0
    ok(capsys, "eval", out / "model.safetensors")


def test_a_timm_weights_file_is_a_teacher(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=10)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp_path / "r18.safetensors"))  # timm's own keys, no icckd metadata
    torch.save(state, tmp_path / "r18.pth")
    for name in ("r18.safetensors", "r18.pth"):
        out = tmp_path / f"s-{name}"
        ok(capsys, "distill", "--teacher", tmp_path / name, "--teacher-arch", "timm:resnet18",
           "--arch", "resnet8", *DATA, "--out", out)  # fmt: skip
        teacher = read_metadata(out / "model.safetensors")["teacher"]
        assert teacher["arch"] == "timm:resnet18" and teacher["sha256"] == weights_hash(state)


def test_models_lists_a_library_with_counts_from_the_meta_device(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = ok(capsys, "models", "--family", "timm", "--filter", "vit_tiny_patch16_2*",
              "--format", "json").json()  # fmt: skip
    assert [r["arch"] for r in rows] == [VIT]
    real = timm.create_model("vit_tiny_patch16_224", num_classes=100)
    assert rows[0]["params"] == sum(p.numel() for p in real.parameters())
    assert rows[0]["feature_dim"] == 192 and rows[0]["input_size"] == 224
    every = ok(capsys, "models", "--family", "torchvision", "--format", "json").json()
    assert "torchvision:vit_b_16" in [r["arch"] for r in every] and len(every) > 64
    assert every[0]["params"] is None  # too many to build: names only (narrow with --filter)
    r = icckd(capsys, "models", "--family", "keras")
    assert (
        r.code == 2
        and r.err.strip() == "error: invalid value for --family ('keras'): use timm or torchvision"
    )


def test_init_fine_tunes_the_recorded_model_with_more_args(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ok(capsys, "train-teacher", *SMALL_VIT, *DATA, "--icc-weight", "0", "--out", tmp_path / "a")
    init = ["--init", tmp_path / "a" / "model.safetensors", "--model-arg", "drop_path_rate=0.1"]
    ok(capsys, "train-teacher", "--arch", VIT, *init, *DATA, "--icc-weight", "0",
       "--out", tmp_path / "b")  # fmt: skip
    meta = read_metadata(tmp_path / "b" / "model.safetensors")
    assert meta["model_args"] == {
        "patch_size": 8,
        "depth": 2,
        "img_size": 32,
        "drop_path_rate": 0.1,
    }


def test_experiment_files_name_library_models() -> None:
    from icckd_cli.base.errors import UsageError
    from tests.helpers import parse_experiment_text, tiny_experiment

    text = tiny_experiment(
        Path("/tmp/x"),
        ('arch = "resnet8"  # teacher', 'arch = "timm:resnet18"\nmodel_args = {drop_rate = 0.1}'),
    )
    exp = parse_experiment_text(text)
    assert exp.teachers[0].config.arch == "timm:resnet18"
    assert exp.teachers[0].config.model_args == {"drop_rate": 0.1}
    with pytest.raises(UsageError) as exc:
        parse_experiment_text(
            text.replace("[student]\n", "[student]\nteacher_model_args = {a = 1}\n")
        )
    assert exc.value.message == (
        "x.toml: [student]: 'teacher_model_args' is set by the experiment; the teachers record "
        "their builder arguments"
    )
    with pytest.raises(
        UsageError, match=r"^x.toml: \[\[teachers\]\] 'ce': unknown timm model 'timm:resnt18'"
    ):
        parse_experiment_text(text.replace("timm:resnet18", "timm:resnt18"))
