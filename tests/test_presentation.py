"""Presentation's modules: JSON output, soft-label paths below the table."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from icckd_cli.presentation import (
    console,
    experiment_progress,
    progress,
    softlabel_tables,
    tables,
)


def test_json_is_one_document_with_paths_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    console.print_json({"top1": 71.5, "path": Path("a/b")})
    assert json.loads(capsys.readouterr().out) == {"top1": 71.5, "path": "a/b"}


def test_softlabel_paths_are_printed_once_below_the_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stats = SimpleNamespace(overall={"accuracy": 50.0, "ratio": 1.25})
    results = [
        SimpleNamespace(name=n, path=Path(f"/x/[{n}]/model.safetensors"), arch="resnet8",
                        objective={"terms": {"ce": 1.0, "icc": 0.1}}, stats=stats)
        for n in ("ce", "icc")
    ]  # fmt: skip
    softlabel_tables.softlabel_summary(results, 4.0, "test")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "soft-label diversity (test split, T = 4)"
    assert "ce + 0.1 icc" in next(line for line in out if "objective" in line)
    # rich markup in a path ([ce]) is printed as it is
    assert out[-2:] == ["  ce: /x/[ce]/model.safetensors", "  icc: /x/[icc]/model.safetensors"]


def test_table_notes_keep_their_square_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    spec = SimpleNamespace(
        title="cost",
        columns=["run"],
        rows=[["ce"]],
        notes=["latency not measured (latency = false in [experiment], or --no-latency)"],
    )
    tables.experiment_tables([spec])
    printed = capsys.readouterr().out
    assert "latency = false in [experiment], or --no-latency" in printed


# ----------------------------------------------------------------------------- progress in a log

EPOCH = {"epoch": 1, "train_loss": 2.3, "train_ce": 2.3, "top1": 12.5, "lr": 0.1,
         "images_per_s": 50.0}  # fmt: skip


def _one_run(view: experiment_progress.ExperimentProgress) -> None:
    """The events of a matrix of one run of two epochs, as run_experiment sends them."""
    view("plan", {"total": 1, "done": 0})
    view("run", {"index": 1, "total": 1, "label": "teachers/ce/seed0", "action": "train"})
    view("start", {"epochs": 2, "steps": 3, "epoch": 0})
    for epoch in (1, 2):
        for _ in range(3):
            view("step", {})
        view("epoch", {**EPOCH, "epoch": epoch})
    best = {"top1": 12.5, "epoch": 1}
    view("run_end", {"final": {"top1": 12.5}, "best": best, "elapsed": 3.0})
    view.close()


def test_in_a_log_each_epoch_of_an_experiment_run_is_one_plain_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _one_run(experiment_progress.ExperimentProgress("tiny"))  # stderr captured: not a terminal
    assert capsys.readouterr().err.splitlines() == [
        "run 1/1: teachers/ce/seed0: training",
        "run 1/1: teachers/ce/seed0: epoch   1/2  loss 2.3  ce 2.3  top1 12.50  lr 0.1  50 img/s",
        "run 1/1: teachers/ce/seed0: epoch   2/2  loss 2.3  ce 2.3  top1 12.50  lr 0.1  50 img/s",
        "run 1/1: teachers/ce/seed0: top-1 12.50 (best 12.50 at epoch 1), 3 s",
    ]


def test_on_a_terminal_the_epochs_stay_in_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    from io import StringIO

    from rich.console import Console

    screen = Console(file=StringIO(), force_terminal=True, width=200)
    monkeypatch.setattr(progress, "err", screen)  # the bars' console
    monkeypatch.setattr(experiment_progress, "err", screen)
    _one_run(experiment_progress.ExperimentProgress("tiny"))
    shown = screen.file.getvalue()  # type: ignore[attr-defined]
    assert "run 1/1: teachers/ce/seed0: top-1 12.50" in shown  # the lines above the bars
    assert "img/s" not in shown  # no epoch line: the bar's description carries the epoch
