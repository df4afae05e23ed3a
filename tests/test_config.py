"""Settings: precedence, the recipe's derived values, and one-line validation errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from icckd_cli.base.errors import UsageError
from icckd_cli.commands.inputs import resolved_config
from icckd_cli.settings.config import DistillConfig, TrainTeacherConfig, build


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
    weights = kd.resolved_weights()
    # every registered term's weight is present; only CE and KD are on (methods/kd.py)
    assert list(weights) == ["ce_weight", "kd_weight", "rkd_weight", "dkd_weight", "crd_weight",
                             *list(weights)[5:]]  # fmt: skip
    assert {k: v for k, v in weights.items() if v} == {"ce_weight": 0.1, "kd_weight": 0.9}
    assert all(isinstance(v, float) for v in weights.values())
    mdistiller = build(DistillConfig, {"method": "kd", "weights": "mdistiller"})
    assert mdistiller.resolved_weights()["ce_weight"] == 1.0
    assert build(DistillConfig, {"kd_weight": 0.5}).resolved_weights()["kd_weight"] == 0.5
    # DKD's warm-up: 20 of 240 epochs, scaled to the run and at least 1 (methods/dkd.py)
    assert _dkd_warmup(build(DistillConfig, {"epochs": 240})) == 20
    assert _dkd_warmup(build(DistillConfig, {"epochs": 10})) == 1
    assert _dkd_warmup(build(DistillConfig, {"epochs": 10, "dkd_warmup": 0})) == 0


def _dkd_warmup(cfg: DistillConfig) -> int | None:
    """The warm-up DKD's own `resolve` hook gives a run of `cfg`'s epochs."""
    from icckd_cli.methods.dkd import DKD, DKDSettings
    from icckd_cli.methods.registry import Context, Method

    assert isinstance(DKD, Method)
    settings = DKD.resolved(cfg, Context(0, 0, 0, cfg.epochs))
    assert isinstance(settings, DKDSettings)
    return settings.dkd_warmup


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


@pytest.mark.parametrize(
    ("table", "kind"), [("teacher", "an experiment"), ("students", "an experiment"),
                        ("tune", "a tune")]
)  # fmt: skip
def test_a_config_file_with_tables_is_named_as_the_file_it_looks_like(
    tmp_path: Path, table: str, kind: str
) -> None:
    toml = tmp_path / "exp.toml"
    toml.write_text(f'[{table}]\narch = "resnet8"\n')  # an experiment's (or tune's) layout
    with pytest.raises(UsageError) as exc:
        build(TrainTeacherConfig, {}, toml)
    assert exc.value.message == (
        f"config file {toml} has a [{table}] table: it looks like {kind} file; run it with "
        f"`icckd {kind.split()[1]} {toml}`, or give --config a file of this command's settings "
        "(KEY = VALUE lines, no tables)"
    )
    assert exc.value.exit_code == 2


# ----------------------------------------------------------------------------- data set recipes


def test_imagenet_recipe_is_the_published_protocol() -> None:
    """mdistiller configs/imagenet/r34_r18/kd.yaml: 100 epochs, 30/60/90, 1e-4, KD 0.5/0.5, T 1."""
    cfg = build(DistillConfig, {"dataset": "imagenet", "arch": "tv_resnet18"})
    assert (cfg.epochs, cfg.batch_size, cfg.momentum, cfg.weight_decay) == (100, 256, 0.9, 1e-4)
    assert cfg.resolved_decay() == [30, 60, 90]
    assert cfg.resolved_lr("tv_resnet18") == pytest.approx(0.1)
    assert cfg.resolved_lr("tv_resnet18", world=2) == pytest.approx(0.2)  # 512 images: 0.2
    weights = cfg.resolved_weights()
    assert (weights["ce_weight"], weights["kd_weight"], cfg.kd_temperature) == (0.5, 0.5, 1.0)
    teacher = build(TrainTeacherConfig, {"dataset": "imagenet", "batch_size": 64})
    assert teacher.resolved_lr("tv_resnet34") == pytest.approx(0.025)  # 0.1 x 64 / 256
    assert teacher.queue_size == 64 and teacher.epochs == 100


def test_imagenet_recipe_yields_to_given_values_and_scales_with_epochs() -> None:
    cfg = build(DistillConfig, {"dataset": "imagenet", "epochs": 10, "kd_weight": 0.9})
    assert cfg.resolved_decay() == [3, 6, 9]
    assert cfg.resolved_weights()["kd_weight"] == 0.9 and cfg.ce_weight == 0.5
    dkd = build(DistillConfig, {"dataset": "imagenet", "method": "dkd"})
    assert (dkd.dkd_beta, dkd.dkd_temperature, _dkd_warmup(dkd)) == (0.5, 1.0, 1)
    assert dkd.resolved_weights()["ce_weight"] == 1.0 and dkd.kd_temperature == 4.0
    cifar = build(DistillConfig, {"dataset": "cifar100"})
    assert (cifar.epochs, cifar.weight_decay, cifar.kd_temperature) == (240, 5e-4, 4.0)


def test_distill_takes_the_teachers_data_set(tmp_path: Path) -> None:
    from icckd_cli.cli.common import teacher_defaults
    from tests.helpers import digits_teacher

    teacher = tmp_path / "t.safetensors"
    digits_teacher(teacher)

    def distill(given: dict[str, Any], config: Path | None = None) -> DistillConfig:
        return build(DistillConfig, given, config, teacher_defaults)  # as the CLI builds it

    assert distill({"teacher": teacher}).dataset == "digits"
    given = distill({"teacher": teacher, "dataset": "cifar10"})
    assert given.dataset == "cifar10"  # a given --dataset wins
    toml = tmp_path / "run.toml"
    toml.write_text('dataset = "cifar10"\n')
    assert distill({"teacher": teacher}, toml).dataset == "cifar10"
    toml.write_text(f"teacher = {str(teacher)!r}\n")  # a teacher named in the file counts too
    assert distill({}, toml).dataset == "digits"
    assert distill({"teacher": tmp_path / "t.pth"}).dataset == "cifar100"
    assert distill({"teacher": tmp_path / "missing.safetensors"}).dataset == "cifar100"
    # validating the settings reads no file: the teacher's header is read where they are built
    assert build(DistillConfig, {"teacher": teacher}).dataset == "cifar100"


def test_toml_tables_are_checked_and_read_in_one_place() -> None:
    from icckd_cli.settings.config import check_tables, read_table

    raw = {"experiment": {"name": "x"}, "teacher": 3, "zzz": {}}
    with pytest.raises(UsageError) as exc:
        check_tables(raw, ("experiment", "teacher"), "x.toml")
    assert exc.value.message == "x.toml: unknown table [zzz]. The tables are: experiment, teacher."
    with pytest.raises(UsageError) as exc:  # a close name is suggested; a hint replaces the list
        check_tables({"studnt": {}}, ("teacher", "student"), "x.toml", "space.", " Use [space.a].")
    assert exc.value.message == "x.toml: unknown table [space.studnt]. Did you mean: student?"
    with pytest.raises(UsageError) as exc:
        check_tables({"zzz": {}}, ("teacher", "student"), "x.toml", "space.", " Use [space.a].")
    assert exc.value.message == "x.toml: unknown table [space.zzz]. Use [space.a]."
    table = read_table(raw, "experiment", "x.toml")
    assert table == {"name": "x"} and table is not raw["experiment"]  # a copy to update
    assert read_table(raw, "student", "x.toml") == {}
    with pytest.raises(UsageError) as exc:
        read_table(raw, "teacher", "x.toml", "space.teacher")
    assert exc.value.message == (
        "x.toml: [space.teacher] must be a table of settings (a [space.teacher] header)"
    )


def test_config_json_reads_back_into_the_runs_own_type(tmp_path: Path) -> None:
    import json

    from icckd_cli.cli.common import resume_config
    from icckd_cli.commands.inputs import record, resolve_run

    cfg = build(DistillConfig, {"method": "dkd", "epochs": 10, "teacher": "t.safetensors",
                                "out": tmp_path, "seed": 3})  # fmt: skip
    run = resolve_run(cfg)
    assert (run.lr, run.lr_decay_epochs, run.warmup_epochs, run.data_seed) == (
        0.05,
        [6, 8, 9],
        0,
        3,
    )
    assert resolve_run(run) == run  # resolving again changes nothing
    (tmp_path / "config.json").write_text(json.dumps(record(run)))
    back = resume_config(DistillConfig, tmp_path, {})
    assert type(back) is DistillConfig and back == run
    assert record(back) == record(run)
    with pytest.raises(Exception, match="frozen"):  # one object, never changed in place
        back.epochs = 3  # type: ignore[misc]


def test_resume_refuses_a_config_json_it_cannot_read_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from icckd_cli.commands.inputs import record, resolve_run
    from tests.helpers import icckd

    run = tmp_path / "run"
    run.mkdir()
    saved = {**record(resolve_run(build(DistillConfig, {"out": run}))), "kd_gamma": 2.0}
    (run / "config.json").write_text(json.dumps(saved))
    before = (run / "config.json").read_bytes()
    r = icckd(capsys, "distill", "--resume", str(run))
    assert r.code == 2 and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert (
        f"{run / 'config.json'} holds 'kd_gamma', a setting this version of icckd does not know "
        "(the run was started by another version); resume it with that version, or start it "
        "afresh with --overwrite"
    ) in r.err
    (run / "config.json").write_text("[1, 2")
    r = icckd(capsys, "distill", "--resume", str(run))
    assert r.code == 2 and r.err.count("\n") == 1
    assert f"{run / 'config.json'} is damaged (no JSON object of settings)" in r.err
    (run / "config.json").write_bytes(before)  # only the test wrote; the command wrote nothing
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
