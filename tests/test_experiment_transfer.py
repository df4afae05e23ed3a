"""An experiment's negative-transfer numbers (kd_worse_seeds, negative_flip_rate, agreement)
from the runs' predictions.npy, checked by hand; a run without the file gives null."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from icckd_cli.commands.experiment.config import load_experiment
from icckd_cli.commands.experiment.finished import FinishedRuns
from icckd_cli.commands.experiment.markdown import results_markdown
from icckd_cli.commands.experiment.plan import Run
from icckd_cli.commands.experiment.results import collect
from icckd_cli.commands.experiment.transfer.measures import with_transfer
from icckd_cli.data import load_dataset
from icckd_cli.metrics.transfer import read_predictions
from tests.helpers import icckd, tiny_experiment

ONE_SEED = ("seeds = [0, 1]", "seeds = [0]")
SMALL = ("train_per_class = 20\ntest_per_class = 5", "train_per_class = 5\ntest_per_class = 3")


@pytest.mark.slow
def test_results_carry_the_transfer_keys_computed_from_the_prediction_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_experiment(tmp_path, ONE_SEED, SMALL))
    r = icckd(capsys, "experiment", config, "--format", "json")
    assert r.code == 0, r.err
    results = json.loads((tmp_path / "exp/results.json").read_text())
    labels = load_dataset("digits", test_per_class=3, train_per_class=1).test.labels.numpy()
    out = tmp_path / "exp"
    alone = read_predictions(out / "baseline/seed0/predictions.npy", len(labels))
    for entry in results["students"]:
        t = entry["teacher"]
        kd = read_predictions(out / f"students/{t}/kd/seed0/predictions.npy", len(labels))
        teacher = read_predictions(out / f"teachers/{t}/seed0/predictions.npy", len(labels))
        flips = 100 * np.mean((alone == labels) & (kd != labels))
        assert entry["negative_flip_rate"] == pytest.approx(flips)
        assert entry["agreement"] == pytest.approx(100 * np.mean(kd == teacher))
        top1 = entry["last"]["values"]["0"]
        base = results["baseline"]["last"]["values"]["0"]
        assert entry["kd_worse_seeds"] == int(top1 < base)
    md = (out / "results.md").read_text()
    assert "## negative transfer" in md and "negative flips %" in md

    # a run made before predictions.npy existed: those keys are null, nothing fails
    (out / "students/icc/kd/seed0/predictions.npy").unlink()
    exp = load_experiment(config)
    finished = FinishedRuns()
    again = with_transfer(exp, collect(exp, {}, finished=finished), finished).to_json()
    icc = next(e for e in again["students"] if e["teacher"] == "icc")
    ce = next(e for e in again["students"] if e["teacher"] == "ce")
    assert icc["negative_flip_rate"] is None and icc["agreement"] is None
    assert icc["kd_worse_seeds"] is not None  # from the checkpoints' top-1
    assert ce["negative_flip_rate"] is not None
    assert "n/a" in results_markdown(again)


def test_corruption_and_long_tail_answers_are_paired_icc_minus_ce(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from icckd_cli.commands.experiment.answers import answer_label
    from icckd_cli.commands.experiment.transfer import measures as transfer
    from tests.helpers import parse_experiment_text

    extra = ('device = "cpu"', 'device = "cpu"\nimbalance_factor = 4\ncorruptions = true')
    exp = parse_experiment_text(tiny_experiment(tmp_path, extra))
    monkeypatch.setattr(Run, "status", lambda self: "done")
    # seed 0: icc 2 above ce; seed 1: icc 1 below (corruption); by hand: mean 0.5, 1 of 2
    corr = {("ce", 0): 50.0, ("icc", 0): 52.0, ("ce", 1): 60.0, ("icc", 1): 59.0}
    monkeypatch.setattr(transfer, "corruption_mean", lambda r: corr[r.teacher, r.seed])
    by_run = {("ce", 0): (40.0, 10.0), ("icc", 0): (43.0, 20.0),
              ("ce", 1): (41.0, 10.0), ("icc", 1): (44.0, 30.0)}  # fmt: skip
    monkeypatch.setattr(
        transfer,
        "student_class_metrics",
        lambda r, labels, finished: dict(
            zip(("balanced_top1", "few"), by_run[r.teacher, r.seed], strict=True)
        ),
    )
    answers = [a.to_json() for a in transfer.extra_answers(exp, None, FinishedRuns())]
    assert [a["metric"] for a in answers] == [
        "mean corruption top-1", "balanced top-1", "few-shot top-1"
    ]  # fmt: skip
    assert all((a["teacher"], a["reference"]) == ("icc", "ce") for a in answers)
    corruption, balanced, few = (a["last"] for a in answers)
    assert corruption["values"] == {"0": 2.0, "1": -1.0} and corruption["positive"] == 1
    assert corruption["mean"] == pytest.approx(0.5) and corruption["ci95"] is not None
    assert balanced["values"] == {"0": 3.0, "1": 3.0} and balanced["positive"] == 2
    assert few["mean"] == pytest.approx(15.0)
    assert answer_label(answers[0]) == "kd from icc (mean corruption top-1) minus kd from ce"


@pytest.mark.slow
def test_corruptions_true_scores_every_student_and_answers_icc_minus_ce_end_to_end(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with_corruptions = ('device = "cpu"', 'device = "cpu"\ncorruptions = true')
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_experiment(tmp_path, SMALL, with_corruptions))
    r = icckd(capsys, "experiment", config, "--format", "json")
    assert r.code == 0, r.err
    out = tmp_path / "exp"
    # each student's mean corruption top-1, scored again here by `eval --corruptions` on its
    # checkpoint: the experiment kept the same summary in the run's corruptions.json
    mean: dict[tuple[str, int], float] = {}
    for teacher in ("ce", "icc"):
        for seed in (0, 1):
            run = out / f"students/{teacher}/kd/seed{seed}"
            kept = json.loads((run / "corruptions.json").read_text())
            ev = icckd(capsys, "eval", run / "model.safetensors", "--device", "cpu",
                       "--corruptions", "--format", "json")  # fmt: skip
            assert ev.code == 0, ev.err
            scored = ev.json()["corruptions"]
            assert len(scored["results"]) == 50  # the built-in suite: 10 corruptions x 5
            assert kept["mean_top1"] == pytest.approx(scored["mean_top1"])
            mean[teacher, seed] = scored["mean_top1"]
    results = json.loads((out / "results.json").read_text())
    (answer,) = [a for a in results["answers"] if a.get("metric") == "mean corruption top-1"]
    assert (answer["teacher"], answer["reference"], answer["student"]) == ("icc", "ce", "kd")
    want = {str(s): mean["icc", s] - mean["ce", s] for s in (0, 1)}
    assert answer["last"]["values"] == pytest.approx(want)
    assert answer["last"]["mean"] == pytest.approx(sum(want.values()) / 2)
    assert answer["last"]["positive"] == sum(v > 0 for v in want.values())
    assert "mean corruption top-1" in (out / "results.md").read_text()
