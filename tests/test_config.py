"""Settings: precedence, the recipe's derived values, and one-line validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from icckd_cli.config import DistillConfig, TrainTeacherConfig, build
from icckd_cli.errors import UsageError
from icckd_cli.runs import resolved_config


def test_command_line_over_file_over_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('epochs = 5\nlr = 0.1\narch = "resnet20"\n')
    cfg = build(TrainTeacherConfig, {"epochs": 3, "batch_size": None}, toml)
    assert cfg.epochs == 3  # command line
    assert cfg.lr == 0.1 and cfg.arch == "resnet20"  # file
    assert cfg.batch_size == 64 and cfg.momentum == 0.9 and cfg.icc_weight == 0.05  # defaults


@pytest.mark.parametrize(
    ("epochs", "decay"),
    [(240, [150, 180, 210]), (10, [6, 8, 9]), (2, [1]), (1, [])],
)
def test_decay_epochs_scale_with_the_run(epochs: int, decay: list[int]) -> None:
    assert build(TrainTeacherConfig, {"epochs": epochs}).resolved_decay() == decay


def test_explicit_decay_epochs_win() -> None:
    cfg = build(TrainTeacherConfig, {"epochs": 10, "lr_decay_epochs": [3, 7]})
    assert cfg.resolved_decay() == [3, 7]


@pytest.mark.parametrize(
    ("arch", "lr"),
    [("resnet8", 0.05), ("MobileNetV2", 0.01), ("ShuffleV1", 0.01), ("ShuffleV2", 0.01)],
)
def test_recipe_learning_rate(arch: str, lr: float) -> None:
    assert build(DistillConfig, {"arch": arch}).resolved_lr(arch) == lr
    assert build(DistillConfig, {"arch": arch, "lr": 0.2}).resolved_lr(arch) == 0.2


def test_resolved_config_uses_the_registered_name() -> None:
    config = resolved_config(build(DistillConfig, {"arch": "mobilenetv2", "epochs": 10}))
    assert config["arch"] == "MobileNetV2" and config["lr"] == 0.01
    assert config["lr_decay_epochs"] == [6, 8, 9]


def test_resolved_config_makes_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = resolved_config(build(DistillConfig, {"teacher": "t/model.safetensors"}))
    assert config["teacher"] == str(tmp_path / "t" / "model.safetensors")
    assert config["data_dir"] is None


def test_method_presets_and_overrides() -> None:
    kd = build(DistillConfig, {"method": "kd"})
    assert kd.resolved_weights() == {
        "ce_weight": 0.1, "kd_weight": 0.9, "rkd_weight": 0.0, "dkd_weight": 0.0,
        "crd_weight": 0.0,
    }  # fmt: skip
    mdistiller = build(DistillConfig, {"method": "kd", "weights": "mdistiller"})
    assert mdistiller.resolved_weights()["ce_weight"] == 1.0
    assert build(DistillConfig, {"kd_weight": 0.5}).resolved_weights()["kd_weight"] == 0.5
    assert build(DistillConfig, {"epochs": 240}).resolved_dkd_warmup() == 20
    assert build(DistillConfig, {"epochs": 10}).resolved_dkd_warmup() == 1


def test_validation_errors_name_the_option() -> None:
    with pytest.raises(UsageError) as exc:
        build(TrainTeacherConfig, {"epochs": 0})
    assert exc.value.message == (
        "invalid value for --epochs (0): Input should be greater than or equal to 1"
    )
    assert exc.value.exit_code == 2
    with pytest.raises(UsageError, match=r"--margin \(1\.0\): Input should be less than 1"):
        build(TrainTeacherConfig, {"margin": 1.0})
    with pytest.raises(UsageError, match="beyond the last epoch"):
        build(TrainTeacherConfig, {"epochs": 10, "lr_decay_epochs": [5, 11]})


def test_unknown_settings_are_named_with_a_suggestion(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text("icc_wieght = 0.1\n")
    with pytest.raises(UsageError) as exc:
        build(TrainTeacherConfig, {}, toml)
    assert exc.value.message == (
        f"unknown setting 'icc_wieght' in {toml}. Did you mean: icc_weight?"
    )
    with pytest.raises(UsageError, match="unknown setting 'teacher' given"):
        build(TrainTeacherConfig, {"teacher": "x"})
