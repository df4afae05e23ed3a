"""TensorBoard event files: the logged values read back, resumed curves without repeated
steps, and the optional package (required, off, or on when installed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from icckd_cli.commands import runs
from icckd_cli.settings.config import TrainTeacherConfig, build
from icckd_cli.training.engine import Interrupted
from icckd_cli.training.rundir import read_metrics
from icckd_cli.training.tensorboard_log import tag_values
from tests.helpers import TEACHER, check_fails, copy, icckd, ok, sigint_at
from tests.helpers import TINY_ERRORS as TINY

Capsys = pytest.CaptureFixture[str]
SPEED = ("speed/epoch_s", "speed/images_per_s")  # timings differ from run to run


def curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag's (step, value) list, as TensorBoard itself reads the folder."""
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def assert_curves_match_metrics(run: Path) -> None:
    """One point per epoch and tag, no step twice, each value the one metrics.jsonl holds."""
    records = read_metrics(run)
    found = curves(run)
    assert set(found) == set(tag_values(records[0]))
    for tag, points in found.items():
        assert [step for step, _ in points] == [r["epoch"] for r in records], tag
        expected = [tag_values(r)[tag] for r in records]
        assert [v for _, v in points] == pytest.approx(expected, rel=1e-6, abs=1e-7), tag


def dead_started_earlier(folder: Path) -> None:
    """Date the event files a minute back, as those of a process that started before ours.

    Readers take a folder's event files in name order, and the name holds the start second
    then a per-process counter as text ("10" sorts before "9"): a file written in this same
    process and second could sort after the resumed run's and escape its purge, which a real
    dead process, started earlier, cannot.
    """
    for path in folder.glob("events.out.tfevents.*"):
        _, _, _, stamp, rest = path.name.split(".", 4)
        path.rename(path.with_name(f"events.out.tfevents.{int(stamp) - 60:010d}.{rest}"))


def test_tags_are_stable_names_for_every_logged_figure() -> None:
    record = {"epoch": 3, "lr": 0.05, "train_loss": 2.5, "train_ce": 2.0, "train_icc": 5.0,
              "train_icc_gate_pass": 0.25, "train_icc_negatives": 7.5, "time": 1.5,
              "images_per_s": 400.0, "top1": 61.0, "top5": 90.0, "nll": 1.25, "ece": 0.0625,
              "new_thing": 1}  # fmt: skip
    assert tag_values(record) == {
        "opt/lr": 0.05, "train/loss": 2.5, "train/ce": 2.0, "train/icc": 5.0,
        "train/icc_gate_pass": 0.25, "train/icc_negatives": 7.5, "speed/epoch_s": 1.5,
        "speed/images_per_s": 400.0, "test/top1": 61.0, "test/top5": 90.0, "test/nll": 1.25,
        "test/ece": 0.0625, "other/new_thing": 1.0,
    }  # fmt: skip


def test_validation_figures_have_val_tags() -> None:
    record = {"epoch": 2, "top1": 61.0, "val_top1": 64.0, "val_top5": 91.0, "val_nll": 1.5,
              "val_ece": 0.125}  # fmt: skip
    assert tag_values(record) == {
        "test/top1": 61.0, "val/top1": 64.0, "val/top5": 91.0, "val/nll": 1.5, "val/ece": 0.125
    }  # fmt: skip


def test_event_files_hold_every_logged_value(reference: Path) -> None:
    # the shared reference run left tensorboard at its default: on, as the package is here
    assert_curves_match_metrics(reference)
    found = curves(reference)
    assert [s for s, _ in found["test/top1"]] == [1, 2]
    assert found["train/icc_gate_pass"] == [(1, 1.0), (2, 1.0)]  # no gate: every anchor


@pytest.mark.slow
def test_resumed_run_continues_the_curves_without_repeated_steps(
    capsys: Capsys, reference: Path, tmp_path: Path
) -> None:
    # the reference run, stopped in its second epoch, with tensorboard off
    first = tmp_path / "first"
    cfg = build(TrainTeacherConfig, {**TEACHER, "out": first, "tensorboard": False})
    with pytest.raises(Interrupted):
        runs.train_teacher(cfg, sigint_at(1, 2))
    assert not (first / "tensorboard").exists() and len(read_metrics(first)) == 1
    second = copy(first, tmp_path / "copy")

    # resumed with --tensorboard: epoch 1 is written from the saved history, then epoch 2
    ok(capsys, "train-teacher", "--resume", first, "--tensorboard")
    assert_curves_match_metrics(first)
    same = {t: p for t, p in curves(reference).items() if t not in SPEED}
    assert {t: p for t, p in curves(first).items() if t not in SPEED} == same  # bit for bit

    # a process that died after logging epoch 2 (bogus values) but before saving its state
    with SummaryWriter(str(second / "tensorboard")) as writer:
        for r in read_metrics(second):
            for tag, value in tag_values(r).items():
                writer.add_scalar(tag, value, r["epoch"])
        for tag in tag_values(read_metrics(second)[0]):
            writer.add_scalar(tag, -1.0, 2)
    dead_started_earlier(second / "tensorboard")
    ok(capsys, "train-teacher", "--resume", second, "--tensorboard")
    assert_curves_match_metrics(second)  # the resumed epoch 2 replaced the dead one's
    assert {t: p for t, p in curves(second).items() if t not in SPEED} == same


def test_tensorboard_without_the_package(
    capsys: Capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    run = ["train-teacher", "--arch", "resnet8", *TINY]
    line = check_fails(capsys, tmp_path, 2, *run, "--out", tmp_path / "asked", "--tensorboard")
    assert line == (
        "error: --tensorboard needs the tensorboard package; install it with "
        "pip install -e '.[tensorboard]' (or pass --no-tensorboard)"
    )
    config = tmp_path / "tb.toml"
    config.write_text("tensorboard = true\n")
    r = icckd(capsys, *run, "--out", tmp_path / "file", "--config", config)
    assert r.code == 2 and "needs the tensorboard package" in r.err
    assert not (tmp_path / "file").exists()
    # not asked for: the run trains without event files
    ok(capsys, *run, "--out", tmp_path / "quiet")
    assert (tmp_path / "quiet" / "model.safetensors").is_file()
    assert not (tmp_path / "quiet" / "tensorboard").exists()


@pytest.mark.slow
def test_no_tensorboard_writes_no_events_and_overwrite_clears_old_ones(
    capsys: Capsys, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    run = ["train-teacher", "--arch", "resnet8", *TINY, "--out", out]
    ok(capsys, *run, "--no-tensorboard")
    assert not (out / "tensorboard").exists()
    assert json.loads((out / "config.json").read_text())["tensorboard"] is False
    ok(capsys, *run, "--overwrite", "--tensorboard", "--seed", "1")
    ok(capsys, *run, "--overwrite", "--tensorboard", "--seed", "2")
    assert len(list((out / "tensorboard").iterdir())) == 1  # the first run's file is gone
    assert_curves_match_metrics(out)
