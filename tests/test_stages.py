"""training/stages.py and the run around the feature methods: the maps read each step, a
preliminary stage before the run's epochs, the methods' own modules saved and resumed but
never part of the student, named layers, and what is refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from icckd_cli.base.errors import UsageError
from icckd_cli.data import Batch
from icckd_cli.methods import registry
from icckd_cli.models import create_model
from icckd_cli.presentation.progress import TrainingProgress
from icckd_cli.settings.config import DistillConfig, build
from icckd_cli.training import distributed as dist
from icckd_cli.training.objectives import DistillObjective
from tests.featref import TIMM_STUDENT, distill_digits, last_metrics
from tests.helpers import (
    INTERRUPTED,
    assert_same_weights,
    history,
    ok,
    one_error,
    parse_experiment_text,
    sigint_at,
    tiny_experiment,
)

FEATURE_METHODS = ("fitnet", "at", "sp", "cc", "vid", "pkt", "ab", "ft", "fsp", "nst", "ofd",
                   "reviewkd")  # fmt: skip


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_every_feature_method_and_its_kd_combination_is_a_method_choice() -> None:
    choices = registry.choices()
    assert all(m in choices and f"kd+{m}" in choices for m in FEATURE_METHODS)
    # KD joins as the CRD benchmark combines it: CE 1 and KD 1 beside the method's weight
    assert registry.preset_weights("kd+fitnet") == {
        **registry.preset_weights("fitnet"),
        "kd_weight": 1.0,
    }


@pytest.mark.parametrize("method", [*FEATURE_METHODS, "kd+reviewkd"])
def test_the_experiment_accepts_each_as_a_student_method(tmp_path: Path, method: str) -> None:
    exp = parse_experiment_text(
        tiny_experiment(tmp_path, ('method = "kd"', f'method = "{method}"'))
    )
    assert [s.config.method for s in exp.students] == [method]


def test_an_experiment_runs_the_teacher_for_a_method_that_reads_maps(tmp_path: Path) -> None:
    # kd and pkt (pooled features) share the store; at, which reads maps, runs the teacher
    students = 'method = "kd"\n\n[[students]]\nmethod = "pkt"\n\n[[students]]\nmethod = "at"'
    exp = parse_experiment_text(tiny_experiment(tmp_path, ('method = "kd"', students)))
    stored = {
        (r.config.method, r.config.teacher_cache is not None)  # type: ignore[union-attr]
        for r in exp.runs
        if r.kind == "student" and r.teacher is not None
    }
    assert stored == {("kd", True), ("pkt", True), ("at", False)}


def _ft_objective(epochs: int) -> tuple[DistillObjective, Any]:
    torch.manual_seed(0)
    cfg = build(DistillConfig, {"method": "kd+ft"})
    teacher, student = create_model("resnet8", 3), create_model("resnet8", 3)
    obj = DistillObjective.from_config(cfg, teacher, 64, 6, epochs, student, 32)
    return obj, student


def test_ft_trains_its_paraphraser_first_with_the_student_in_eval_mode() -> None:
    obj, student = _ft_objective(epochs=24)
    assert obj.preliminary_epochs == 3  # 30 of 240 epochs, scaled to 24
    assert [t.name for t in obj.preliminary] == ["ft"]
    assert [t.name for t in obj.terms] == ["ce", "kd", "ft"]
    g = torch.Generator().manual_seed(0)
    batch = Batch([torch.randn(4, 3, 32, 32, generator=g)], torch.arange(4) % 3, torch.arange(4))
    student.train()
    _, stats = obj(student, batch, 2)
    assert set(stats) == {"ft"} and not student.training
    # the paraphraser alone learns there: the student's loss does not reach the student
    loss, _ = obj(student, batch, 2)
    loss.backward()
    assert all(p.grad is None for p in student.parameters())
    assert all(p.grad is not None for p in obj.ft["paraphraser"].parameters())
    obj.zero_grad(set_to_none=True)
    loss, stats = obj(student, batch, 3)
    assert set(stats) == {"ce", "kd", "ft"} and student.training
    loss.backward()  # after it, the paraphraser is frozen and the translator learns
    assert all(p.grad is None for p in obj.ft["paraphraser"].parameters())
    assert all(p.grad is not None for p in obj.ft["translator"].parameters())


def test_ab_trains_the_students_layers_first_in_training_mode() -> None:
    torch.manual_seed(0)
    cfg = build(DistillConfig, {"method": "kd+ab"})
    teacher, student = create_model("resnet8", 3), create_model("resnet8", 3)
    obj = DistillObjective.from_config(cfg, teacher, 64, 6, 240, student, 32)
    assert obj.preliminary_epochs == 30 and [t.name for t in obj.terms] == ["ce", "kd"]
    g = torch.Generator().manual_seed(0)
    batch = Batch([torch.randn(4, 3, 32, 32, generator=g)], torch.arange(4) % 3, torch.arange(4))
    loss, stats = obj(student.train(), batch, 29)
    assert set(stats) == {"ab"} and student.training  # pretrain.py's init_modules.train()
    loss.backward()
    assert student.conv1.weight.grad is not None and student.fc.weight.grad is None


def test_the_run_counts_the_preliminary_epochs_before_its_own(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # 4 epochs decayed at epoch 2, after one preliminary epoch: 5 in all, decayed at the 4th
    r = distill_digits(capsys, tmp_path, "fsp", "--epochs", "4", "--lr-decay-epochs", "2")
    assert r.code == 0, r.err
    rows = _rows(tmp_path / "run")
    assert [row["lr"] for row in rows] == pytest.approx([0.05, 0.05, 0.05, 0.005, 0.005])
    assert ["train_fsp" in row for row in rows] == [True, False, False, False, False]


def test_the_saved_and_exported_student_hold_none_of_the_methods_modules(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = distill_digits(capsys, tmp_path, "reviewkd")  # the ABF modules train beside it
    assert r.code == 0, r.err
    plain = set(create_model("resnet8", 10).state_dict())
    assert set(load_file(str(tmp_path / "run" / "model.safetensors"))) == plain
    out = tmp_path / "student.pt"
    ok(capsys, "export", tmp_path / "run" / "model.safetensors", "--to", "torchscript",
       "--out", out)  # fmt: skip
    # the export wraps the network (model.*) with the input normalisation's two buffers
    exported = set(torch.jit.load(str(out)).state_dict())
    assert exported == {f"model.{k}" for k in plain} | {"mean", "std"}


def test_an_interrupted_run_with_its_own_modules_resumes_bit_for_bit(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # FT: a paraphraser trained in a preliminary epoch, then a translator beside the student
    more = ["--epochs", "2", "--train-per-class", "5", "--save-every", "1"]
    assert distill_digits(capsys, tmp_path / "whole", "ft", *more).code == 0
    show = TrainingProgress.__call__
    stop = sigint_at(1, 1)  # in the first epoch after the preliminary one

    def progress(self: TrainingProgress, event: str, info: dict[str, Any]) -> None:
        show(self, event, info)
        stop(event, info)

    monkeypatch.setattr(TrainingProgress, "__call__", progress)
    r = distill_digits(capsys, tmp_path / "cut", "ft", *more)
    monkeypatch.undo()
    assert r.code == INTERRUPTED, r.err
    run = tmp_path / "cut" / "run"
    state = load_file(str(run / "state.safetensors"))
    assert any(k.startswith("objective/ft.translator.") for k in state)  # the modules are kept
    ok(capsys, "distill", "--resume", run)
    assert_same_weights(tmp_path / "whole" / "run", run)
    assert history(tmp_path / "whole" / "run") == history(run)


def test_the_teacher_output_store_refuses_a_method_that_reads_maps(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    r = distill_digits(capsys, tmp_path, "kd+at", "--teacher-cache", str(store))
    assert r.code == 2
    assert one_error(r.err) == (
        "error: invalid settings: --method kd+at reads the teacher's intermediate feature "
        "maps, and the teacher-output store keeps logits and pooled features only; drop "
        "--teacher-cache"
    )
    assert not store.exists() and not (tmp_path / "run").exists()


def test_named_layers_pair_a_timm_student_with_the_teacher(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # AT pairs the maps after the first: the student's last three blocks, the teacher's stages
    layers = [x for name in ("bn1", "blocks.1", "blocks.3", "blocks.5")
              for x in ("--feature-layers", name)]  # fmt: skip
    r = distill_digits(capsys, tmp_path, "at", "--arch", TIMM_STUDENT, *layers)
    assert r.code == 0, r.err
    assert last_metrics(tmp_path / "run")["train_at"] > 0


def test_an_unknown_layer_is_refused_before_anything_is_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = distill_digits(capsys, tmp_path, "at", "--teacher-feature-layers", "layer9")
    assert r.code == 2
    assert one_error(r.err).startswith(
        "error: --feature-layers names 'layer9', which resnet8 has no module of"
    )
    assert not (tmp_path / "run").exists()


def test_the_objective_refuses_maps_from_a_store_or_under_torchrun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = build(DistillConfig, {"method": "at"})
    student = create_model("resnet8", 3)

    class Store:  # a TeacherSource that is no network: the store's outputs
        feature_dim = 64

    with pytest.raises(UsageError, match=r"^the teacher-output store keeps logits and pooled"):
        DistillObjective.from_config(cfg, Store(), 64, 6, 1, student, 32)  # type: ignore[arg-type]
    monkeypatch.setattr(dist, "is_distributed", lambda: True)
    with pytest.raises(UsageError, match=r"runs in one process for now; run it without torchrun"):
        DistillObjective.from_config(cfg, create_model("resnet8", 3), 64, 6, 1, student, 32)


def test_a_hint_layer_past_the_maps_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = distill_digits(capsys, tmp_path, "fitnet", "--fitnet-hint-layer", "4")
    assert r.code == 2
    assert one_error(r.err) == (
        "error: --fitnet-hint-layer 4 is past the maps the student (4) and the teacher (4) "
        "give; choose 0 to 3"
    )
