"""`icckd plot`: learning curves of several runs, live ones included, and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from icckd_cli.commands.curves import metric_key, run_labels
from icckd_cli.presentation.run_plots import CURVE_DPI, PANEL_SIZE
from tests.helpers import RUNTIME, USAGE, check_fails

Capsys = pytest.CaptureFixture[str]


def fake_run(folder: Path, epochs: int, decay: list[int], partial: str = "") -> Path:
    """A run folder as train-teacher leaves it: config.json and one record per epoch."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"lr_decay_epochs": decay}))
    records = [
        {"epoch": e, "lr": 0.05 * 0.1 ** sum(e > d for d in decay), "train_loss": 3.0 / e,
         "top1": 10.0 * e, "top5": 50.0 + e, "nll": 2.0 / e, "ece": 0.1 / e}
        for e in range(1, epochs + 1)
    ]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in records)
    (folder / "metrics.jsonl").write_text(text + partial)
    return folder


def plot(capsys: Capsys, *argv: Any) -> dict[str, Any]:
    from tests.helpers import ok

    return dict(ok(capsys, "plot", *argv, "--format", "json").json())


def test_labels_are_folder_names_with_parents_only_where_needed(tmp_path: Path) -> None:
    assert run_labels([tmp_path / "ce", tmp_path / "icc"]) == ["ce", "icc"]
    runs = [tmp_path / "teachers/ce/seed0", tmp_path / "teachers/icc/seed0", tmp_path / "x/seed1"]
    assert run_labels(runs) == ["ce/seed0", "icc/seed0", "x/seed1"]


def test_metrics_are_named_by_key_or_tensorboard_tag() -> None:
    assert [metric_key(m) for m in ("test/top1", "train/icc_gate_pass", "opt/lr", "nll")] == [
        "top1",
        "train_icc_gate_pass",
        "lr",
        "nll",
    ]


@pytest.mark.slow
def test_plot_of_two_runs_has_a_panel_per_metric(capsys: Capsys, tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", 4, [2])
    b = fake_run(tmp_path / "b", 3, [2], partial='{"epoch": 4, "lr": 0.0')  # live: mid-write
    out = tmp_path / "figs" / "curves.png"
    drawn = plot(capsys, a, b, "--out", out, "--metric", "top1", "--metric", "test/nll")
    assert drawn["metrics"] == ["top1", "nll"]
    assert [(r["label"], r["epochs"], r["lr_decay"]) for r in drawn["runs"]] == [
        ("a", 4, [2]),
        ("b", 3, [2]),
    ]
    with Image.open(out) as png:  # two panels side by side, one row
        assert png.format == "PNG"
        assert png.width == round(2 * PANEL_SIZE[0] * CURVE_DPI)
        one_row = png.height
    drawn = plot(capsys, a, b, "--out", out, *(x for m in ("lr", "top1", "top5", "nll", "ece")
                                                  for x in ("--metric", m)))  # fmt: skip
    assert drawn["metrics"] == ["lr", "top1", "top5", "nll", "ece"]
    with Image.open(out) as png:  # five panels: three in the first row, two below
        assert png.width == round(3 * PANEL_SIZE[0] * CURVE_DPI)
        assert png.height == one_row + round(PANEL_SIZE[1] * CURVE_DPI)
    assert plot(capsys, a, "--out", out)["metrics"] == ["train_loss", "top1", "nll"]


def test_plot_bad_inputs_are_one_line(capsys: Capsys, tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", 2, [])
    (tmp_path / "empty").mkdir()
    line = check_fails(capsys, tmp_path, USAGE, "plot", run, tmp_path / "empty", "--out", "f.png")
    assert line == (
        f"error: {tmp_path / 'empty'} holds no metrics.jsonl; give the --out folder of a "
        "train-teacher or distill run that finished at least one epoch"
    )
    out = tmp_path / "f.png"
    check_fails(capsys, tmp_path, USAGE, "plot", tmp_path / "nowhere", "--out", out,
                says="run folder")  # fmt: skip
    line = check_fails(capsys, tmp_path, USAGE, "plot", run, "--out", out, "--metric", "top")
    assert line == (
        "error: no run logs the metric 'top'. Did you mean: top5, top1? Choose from: ece, lr, "
        "nll, top1, top5, train_loss"
    )
    check_fails(capsys, tmp_path, USAGE, "plot", run, "--out", tmp_path / "f.txt",
                says="name a .png file")  # fmt: skip
    fake_run(tmp_path / "live", 0, [], partial='{"epoch": 1, "lr"')
    check_fails(capsys, tmp_path, USAGE, "plot", tmp_path / "live", "--out", out,
                says="holds no finished epoch yet")  # fmt: skip
    (tmp_path / "notes.txt").write_text("")
    check_fails(capsys, tmp_path, RUNTIME, "plot", run, "--out", tmp_path / "notes.txt/f.png",
                says="choose a writable --out")  # fmt: skip
    damaged = fake_run(tmp_path / "damaged", 0, [])
    (damaged / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    line = check_fails(capsys, tmp_path, RUNTIME, "plot", damaged, "--out", out)
    assert "metrics.jsonl line 2 is not a JSON record" in line
