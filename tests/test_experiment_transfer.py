"""An experiment's negative-transfer numbers (kd_worse_seeds, negative_flip_rate, agreement)
from the runs' predictions.npy, checked by hand; a run without the file gives null."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from icckd_cli.data import load_dataset
from icckd_cli.metrics.transfer import read_predictions
from icckd_cli.work import experiment as ex
from icckd_cli.work.experiment.transfer import add_transfer
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
    exp = ex.load_experiment(config)
    again = ex.collect(exp, {})
    add_transfer(exp, again)
    icc = next(e for e in again["students"] if e["teacher"] == "icc")
    ce = next(e for e in again["students"] if e["teacher"] == "ce")
    assert icc["negative_flip_rate"] is None and icc["agreement"] is None
    assert icc["kd_worse_seeds"] is not None  # from the checkpoints' top-1
    assert ce["negative_flip_rate"] is not None
    assert "n/a" in ex.results_markdown(again)
