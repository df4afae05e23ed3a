"""`icckd experiment` with match_teachers = true (issue 29), and the teacher gap of every answer."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from icckd_cli.base.checkpoint import read_metadata
from icckd_cli.base.errors import UsageError
from icckd_cli.commands.experiment.config import load_experiment
from icckd_cli.commands.experiment.matched.rule import MATCH_NEEDS_VALIDATION
from icckd_cli.commands.experiment.matched.tables import gap_table, with_matching
from icckd_cli.commands.experiment.matrix import plan_states, run_experiment
from icckd_cli.commands.experiment.result_types import (
    Answer,
    Costs,
    Difference,
    ExperimentResults,
    Setup,
)
from icckd_cli.commands.experiment.teacher_gap import with_gaps
from icckd_cli.training.snapshots import list_snapshots, snapshot_path
from tests.helpers import icckd, parse_experiment_text, tiny_experiment

# resnet8 teachers and a KD student on 10 digits a class, 2 epochs, 5 + 5 held out: 4 runs
MATCHED = (
    ("train_per_class = 20", "train_per_class = 10\nval_per_class = 5\nmatch_teachers = true"),
    ("seeds = [0, 1]", "seeds = [0]"),
    ("epochs = 1  # teacher", "epochs = 2  # teacher"),
    ("epochs = 1  # student", "epochs = 2  # student"),
    ("baseline = true", "baseline = false"),
    ('device = "cpu"', 'device = "cpu"\nlatency = false'),
)


def test_without_a_validation_split_refused_in_one_line_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "x.toml"
    config.write_text(tiny_experiment(tmp_path, ("seeds = [0, 1]", "match_teachers = true")))
    r = icckd(capsys, "experiment", config)
    assert r.code == 2
    assert r.err == f"error: {MATCH_NEEDS_VALIDATION}\n"
    assert not (tmp_path / "exp").exists()


def test_the_plan_keeps_snapshots_and_moves_only_the_students(tmp_path: Path) -> None:
    text = tiny_experiment(tmp_path, *MATCHED)
    on = parse_experiment_text(text)
    off = parse_experiment_text(text.replace("match_teachers = true", "match_teachers = false"))
    labels = [r.label for r in on.runs]
    assert labels == [
        "teachers/ce/seed0",
        "teachers/icc/seed0",
        "students-matched/ce/kd/seed0",
        "students-matched/icc/kd/seed0",
    ]
    assert [r.label for r in off.runs][:2] == labels[:2]  # the same teachers, reused
    assert [r.label for r in off.runs][2:] == ["students/ce/kd/seed0", "students/icc/kd/seed0"]
    assert [r.config.keep_snapshots for r in on.runs[:2]] == [True, True]  # type: ignore[union-attr]
    assert not any(getattr(r.config, "keep_snapshots", False) for r in off.runs)
    # an execution option: never in config.json, so switching it keeps finished teachers valid
    assert "keep_snapshots" not in on.runs[0].config.model_dump()
    two = parse_experiment_text(text + '\n[[students]]\nname = "kd2"\nmethod = "kd"\n')
    caches = {str(r.config.teacher_cache) for r in two.runs if r.kind == "student"}  # type: ignore[union-attr]
    assert caches == {str(tmp_path / f"exp/teacher_cache-matched/{t}/seed0") for t in ("ce", "icc")}
    with pytest.raises(UsageError, match="'keep_snapshots' is set by the experiment"):
        parse_experiment_text(text.replace('arch = "resnet8"  # teacher', "keep_snapshots = 1"))


def _line(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """slope, intercept and the half-width of its 95% interval, by the textbook formulas."""
    n = len(x)
    xbar, ybar = sum(x) / n, sum(y) / n
    sxx = sum((a - xbar) ** 2 for a in x)
    slope = sum((a - xbar) * (b - ybar) for a, b in zip(x, y, strict=True)) / sxx
    intercept = ybar - slope * xbar
    sse = sum((b - intercept - slope * a) ** 2 for a, b in zip(x, y, strict=True))
    se = math.sqrt(sse / (n - 2)) * math.sqrt(1 / n + xbar**2 / sxx)
    return slope, intercept, 12.706204736174698 * se  # t_{0.975, 1}


def _hand_made(seeds: list[int], student: dict[str, float]) -> ExperimentResults:
    diff = Difference(0.0, None, len(student), len(seeds), student, None, 0)
    answer = Answer("kd", "kd", "icc", "ce", diff)
    alone = Answer("kd", "kd", "icc", None, diff)
    setup = Setup("x", "digits", None, None, None, None, None, None, seeds, "out", seeds, 4.0)
    answers = [alone, answer]
    none = Costs(None, None, [])
    return ExperimentResults(setup, "icckd experiment", answers, "", [], [], [], [], None, none)


def test_the_teacher_gap_and_the_intercept_against_a_hand_computation() -> None:
    # teachers icc minus ce: +1, +2, +3 points; their students: +2, +3, +5
    results = _hand_made([0, 1, 2], {"0": 2.0, "1": 3.0, "2": 5.0})
    teachers = {"ce": {0: 70.0, 1: 70.0, 2: 71.0}, "icc": {0: 71.0, 1: 72.0, 2: 74.0}}
    results = with_gaps(results, teachers).to_json()
    alone, answer = results["answers"]
    assert "teacher_difference" not in alone  # not a comparison of two teachers' students
    gap = answer["teacher_difference"]
    assert gap["values"] == {"0": 1.0, "1": 2.0, "2": 3.0} and gap["mean"] == pytest.approx(2.0)
    slope, intercept, half = _line([1.0, 2.0, 3.0], [2.0, 3.0, 5.0])
    assert (slope, intercept) == pytest.approx((1.5, 1 / 3))  # by hand: Sxy 3 / Sxx 2
    line = answer["line"]
    assert line["slope"] == pytest.approx(slope) and line["intercept"] == pytest.approx(intercept)
    assert line["intercept_ci95"] == pytest.approx([intercept - half, intercept + half])
    assert line["n"] == 3 and line["df"] == 1
    json.dumps(results)  # JSON-ready
    table = gap_table(results)
    assert table is not None
    assert table.columns[-2:] == ["slope", "intercept [95% interval]"]
    lo, hi = intercept - half, intercept + half
    assert table.rows == [
        [
            "kd from icc minus kd from ce",
            "+2.00 [-0.48, +4.48] 3/3",
            "+0.00 [-] 0/3",
            "+1.50",
            f"+0.33 [{lo:+.2f}, {hi:+.2f}]",
        ]
    ]
    assert any("with few seeds this interval is wide" in n for n in table.notes)


def test_under_three_seeds_no_line_and_the_table_says_why() -> None:
    hand_made = _hand_made([0, 1], {"0": 2.0, "1": 3.0})
    results = with_gaps(hand_made, {"ce": {0: 70.0, 1: 70.0}, "icc": {0: 71.0, 1: 72.0}}).to_json()
    assert results["answers"][1]["line"] is None
    table = gap_table(results)
    assert table is not None and table.rows[0][-2:] == ["-", "- (needs 3 seeds)"]
    assert with_matching(results, []) == [table]  # no matched table without match_teachers


@pytest.mark.slow
def test_a_tiny_matched_experiment_end_to_end(tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text(tiny_experiment(tmp_path, *MATCHED))
    out = tmp_path / "exp"
    exp = load_experiment(config)
    done = run_experiment(exp, lambda event, info: None)
    assert done is not None
    results = done.to_json()
    assert results == json.loads((out / "results.json").read_text())
    assert results["match_teachers"] is True
    matched = results["matched"]["0"]
    curves = {}
    for name in ("ce", "icc"):
        run = out / f"teachers/{name}/seed0"
        assert [e for e, _ in list_snapshots(run)] == [1, 2]  # every evaluated epoch kept
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        curves[name] = {r["epoch"]: r for r in history}
    best = min(max(r["val_top1"] for r in c.values()) for c in curves.values())
    assert matched["target_val_top1"] == best
    for name, chosen in matched["teachers"].items():
        record = curves[name][chosen["epoch"]]
        assert chosen["val_top1"] == record["val_top1"] >= best
        assert chosen["test_top1"] == record["top1"]  # the test number of the matched epoch
        assert all(
            r["val_top1"] < best for e, r in curves[name].items() if e < chosen["epoch"]
        )  # the first epoch that reaches it
        student = out / f"students-matched/{name}/kd/seed0/model.safetensors"
        teacher = read_metadata(student)["teacher"]
        snap = snapshot_path(out / f"teachers/{name}/seed0", chosen["epoch"])
        assert teacher["path"] == str(snap.resolve())
        assert teacher["epoch"] == chosen["epoch"]
        assert teacher["file_sha256"] == hashlib.sha256(snap.read_bytes()).hexdigest()
    assert not (out / "students").exists()  # the unmatched students' folders untouched
    answer = next(a for a in results["answers"] if a["reference"] == "ce")
    assert answer["teacher_difference"]["n"] == 1 and answer["line"] is None
    md = (out / "results.md").read_text()
    assert "students of accuracy-matched teachers" in md
    assert "## accuracy-matched teachers on digits" in md

    events: list[tuple[str, dict[str, Any]]] = []
    again = run_experiment(load_experiment(config), lambda e, i: events.append((e, i)))
    assert [i["action"] for e, i in events if e == "run"] == ["skip"] * 4  # reused
    assert again is not None and again.to_json()["matched"] == results["matched"]

    # --dry-run checks the matched students against the snapshots they read, as a run does
    assert [s for _, s in plan_states(load_experiment(config))] == ["done"] * 4

    # a teacher made without snapshots cannot be matched: refused before any work
    for _, path in list_snapshots(out / "teachers/icc/seed0"):
        path.unlink()
    with pytest.raises(UsageError, match="teachers/icc/seed0 was trained without epoch snap"):
        run_experiment(load_experiment(config), lambda e, i: None)
    with pytest.raises(UsageError, match="teachers/icc/seed0 was trained without epoch snap"):
        plan_states(load_experiment(config))
