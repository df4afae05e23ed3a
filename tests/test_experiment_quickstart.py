"""`icckd quickstart`: the built-in experiment is the example file, and runs into --out."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from icckd_cli.commands.experiment.plan import Experiment
from icckd_cli.commands.experiment.quickstart import QUICKSTART_TOML, quickstart_experiment
from icckd_cli.commands.experiment.result_types import ExperimentResults
from icckd_cli.commands.experiment.results import collect
from tests.helpers import icckd

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_text_is_the_example_file() -> None:
    assert QUICKSTART_TOML == (ROOT / "examples" / "quickstart.toml").read_text()
    exp = quickstart_experiment()
    assert exp.options.dataset == "digits" and len(exp.options.seeds) >= 2
    assert [t.cross_entropy for t in exp.teachers] == [True, False]
    assert [s.config.method for s in exp.students] == ["kd"]


def test_cli_quickstart_runs_the_built_in_experiment_into_out(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Experiment] = []

    def fake_run(exp: Experiment, callback: Any, wait: bool = True) -> ExperimentResults:
        seen.append(exp)
        return collect(exp, {})  # nothing trained: every cell is missing

    monkeypatch.setattr("icckd_cli.commands.experiment.matrix.run_experiment", fake_run)
    r = icckd(capsys, "quickstart", "--out", str(tmp_path / "qs"), "--device", "cpu")
    assert r.code == 0, r.err
    (exp,) = seen
    assert exp.options.out == tmp_path / "qs" and exp.options.device == "cpu"
    seeds = len(exp.options.seeds)  # per seed: 2 KD students and the baseline
    tseeds = len(exp.options.resolved_teacher_seeds())  # per teacher seed: 2 teachers
    assert exp.command == "icckd quickstart" and len(exp.runs) == 3 * seeds + 2 * tseeds
    assert tseeds < seeds  # teachers cost most: fewer of their seeds
    assert exp.runs[0].out == tmp_path / "qs/teachers/ce/seed0"
    assert f"n/a (0/{seeds} seeds)" in r.out and "0.00" not in r.out
    assert "accuracy against cost (top-1 % at the last epoch" in r.out  # before any run: n/a


@pytest.mark.slow
def test_reduced_quickstart_trains_each_role_on_its_own_subset(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icckd_cli.base.checkpoint import read_metadata
    from icckd_cli.commands.experiment import quickstart as qs
    from icckd_cli.data import load_dataset

    built_in = quickstart_experiment()
    assert built_in.baseline is not None
    student_pc = built_in.baseline.train_per_class
    assert student_pc and built_in.teachers[0].config.train_per_class is None  # all of digits
    # the built-in text with tiny epochs, 2 seeds, 20 teacher images a class and 5 test images
    text = re.sub(r"(?m)^epochs = \d+", "epochs = 1", qs.QUICKSTART_TOML)
    text = re.sub(r"(?m)^seeds = .*", "seeds = [0, 1]\ntest_per_class = 5", text)
    text = text.replace("[teacher]\n", "[teacher]\ntrain_per_class = 20\n")
    monkeypatch.setattr(qs, "QUICKSTART_TOML", text)
    r = icckd(capsys, "quickstart", "--out", str(tmp_path / "qs"), "--device", "cpu")
    assert r.code == 0, r.err
    assert r.out.lstrip().startswith("what distillation adds on digits")
    results = json.loads((tmp_path / "qs/results.json").read_text())
    assert (results["teacher_train_per_class"], results["student_train_per_class"]) == (
        20,
        student_pc,
    )
    assert [(a["teacher"], a["reference"]) for a in results["answers"]] == [
        ("ce", None), ("icc", None), ("icc", "ce")
    ]  # fmt: skip
    assert all(a["last"]["n"] == 2 for a in results["answers"])
    assert results["answers_summary"].startswith("At the last epoch, paired by seed: kd from ce")
    # accuracy against cost: one architecture (resnet8) timed once, so the speed-up is 1
    cost = results["cost"]
    assert cost["latency"] and cost["figure"] == "accuracy_latency.png"
    assert [r["name"] for r in cost["rows"]] == ["ce", "icc", "kd from ce", "kd from icc",
                                                 "alone (CE)"]  # fmt: skip
    assert all(r["latency_ms"] > 0 and r["macs"] == 12_501_632 for r in cost["rows"])
    assert [r["speedup"] for r in cost["rows"] if r["role"] == "student"] == [1.0, 1.0]
    assert "accuracy against cost" in r.out
    # every checkpoint records the subset its run trained on
    for run in quickstart_experiment({"out": tmp_path / "qs"}).runs:
        meta = read_metadata(run.out / "model.safetensors")
        wanted = 20 if run.kind == "teacher" else student_pc
        assert meta["config"]["train_per_class"] == wanted, run.label
        assert meta["config"]["test_per_class"] == 5
    # the students normalise as their teacher did, not with their own subset's statistics
    teacher = read_metadata(tmp_path / "qs/teachers/icc/seed0/model.safetensors")
    student = read_metadata(tmp_path / "qs/students/icc/kd/seed0/model.safetensors")
    assert student["dataset"]["mean"] == teacher["dataset"]["mean"]
    own = load_dataset("digits", train_per_class=student_pc).spec.mean
    assert own != teacher["dataset"]["mean"]
