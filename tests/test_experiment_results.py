"""Aggregating an experiment: mean and std over seeds, paired differences, tables, Markdown."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from icckd_cli.commands.experiment import results as res
from icckd_cli.commands.experiment.finished import FinishedRuns
from icckd_cli.commands.experiment.markdown import (
    result_tables,
    results_markdown,
    validation_phrase,
)
from icckd_cli.commands.experiment.plan import Run
from icckd_cli.commands.experiment.results import aggregate, collect, paired_difference
from icckd_cli.commands.experiment.tables import TableSpec, cell, diff_cell
from tests.helpers import parse_experiment_text, tiny_experiment


def test_aggregate_mean_and_sample_std() -> None:
    agg = aggregate({0: 1.0, 1: 2.0, 2: 4.0}, 3)
    assert agg.mean == pytest.approx(7 / 3)
    # sample std (n - 1): sum of squares 42/9 over 2
    assert agg.std == pytest.approx(math.sqrt(7 / 3))
    assert agg.n == 3 and agg.seeds == 3
    assert agg.values == {"0": 1.0, "1": 2.0, "2": 4.0}
    assert agg.to_json() == {"mean": agg.mean, "std": agg.std, "n": 3, "seeds": 3,
                             "values": {"0": 1.0, "1": 2.0, "2": 4.0}}  # fmt: skip
    assert cell(agg.to_json()) == "2.33 ± 1.53"


def test_one_seed_has_no_std() -> None:
    agg = aggregate({0: 97.2222}, 1)
    assert agg.std is None
    assert cell(agg.to_json()) == "97.22 ± -"


def test_missing_runs_are_shown_as_missing_never_as_zero() -> None:
    some = aggregate({0: 90.0, 1: None, 2: float("nan")}, 3)
    assert some.n == 1 and some.mean == 90.0 and some.std is None
    assert cell(some.to_json()) == "90.00 ± - (1/3 seeds)"
    none = aggregate({0: None, 1: None}, 2)
    assert none.mean is None and none.n == 0
    assert cell(none.to_json()) == "n/a (0/2 seeds)"
    assert cell(aggregate({}, 2).to_json(), signed=True) == "n/a (0/2 seeds)"


def test_paired_difference_is_per_seed_and_skips_missing_seeds() -> None:
    icc = {0: 92.0, 1: 94.0, 2: 95.0, 3: None}
    ce = {0: 91.0, 1: 91.5, 3: 90.0}
    diff = paired_difference(icc, ce)
    assert diff == {0: 1.0, 1: 2.5}
    agg = aggregate(diff, 4)
    assert cell(agg.to_json(), signed=True) == f"+1.75 ± {math.sqrt(2 * 0.75**2):.2f} (2/4 seeds)"
    assert cell(aggregate({0: -0.5}, 1).to_json(), signed=True) == "-0.50 ± -"


def test_collect_builds_every_cell_and_the_icc_minus_ce_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = parse_experiment_text(tiny_experiment(tmp_path))
    top1 = {
        "teachers/ce/seed0": 95.0, "teachers/ce/seed1": 96.0,
        "teachers/icc/seed0": 94.0, "teachers/icc/seed1": 95.0,
        "students/ce/kd/seed0": 90.0, "students/ce/kd/seed1": 91.0,
        "students/icc/kd/seed0": 92.0,  # seed 1 of this student is missing
        "baseline/seed0": 88.0, "baseline/seed1": 89.0,
    }  # fmt: skip

    def fake_metric(run: Run, which: str) -> float | None:
        value = top1.get(run.label)  # best epoch: 0.5 above the last one
        return None if value is None else value + (0.5 if which == "best" else 0.0)

    monkeypatch.setattr(
        FinishedRuns, "top1", lambda self, run, which="final": fake_metric(run, which)
    )
    diversity = {"ce": {0: {"ratio": 0.1, "feature_ratio": 0.3, "target_prob": 0.9}},
                 "icc": {0: {"ratio": 0.2, "feature_ratio": 0.4, "target_prob": 0.8},
                         1: {"ratio": 0.4, "feature_ratio": 0.5, "target_prob": 0.7}}}  # fmt: skip
    results = collect(exp, diversity).to_json()
    ce, icc = results["teachers"]
    assert ce["cross_entropy"] and not icc["cross_entropy"]
    assert ce["top1"]["mean"] == 95.5 and icc["top1"]["mean"] == 94.5
    assert ce["diversity"]["ratio"]["n"] == 1 and icc["diversity"]["ratio"][
        "mean"
    ] == pytest.approx(0.3)
    by_teacher = {s["teacher"]: s for s in results["students"]}
    assert by_teacher["ce"]["last"]["mean"] == 90.5 and by_teacher["ce"]["best"]["mean"] == 91.0
    assert by_teacher["icc"]["last"]["n"] == 1
    (diff,) = results["differences"]
    assert (diff["teacher"], diff["reference"]) == ("icc", "ce")
    assert diff["last"]["values"] == {"0": 2.0} and diff["last"]["n"] == 1
    assert results["baseline"]["last"]["mean"] == 88.5

    tables = result_tables(results)
    students = _students_table(tables)
    rows = {tuple(r[:3]): r[3:] for r in students.rows}
    assert rows[("kd", "resnet8", "icc")] == ["92.00 ± - (1/2 seeds)", "92.50 ± - (1/2 seeds)"]
    assert rows[("", "", "icc minus ce")] == ["+2.00 [-] 1/1 (1/2 seeds)"] * 2
    assert rows[("alone (CE)", "resnet8", "none")] == ["88.50 ± 0.71", "89.00 ± 0.71"]
    markdown = results_markdown(results)
    assert (
        "| teacher | intra/inter (soft labels) | intra/inter (features) | mean p(target) |"
        in markdown
    )
    assert (
        "| ce | 0.1000 ± - (1/2 seeds) | 0.3000 ± - (1/2 seeds) | 0.9000 ± - (1/2 seeds) |"
        in markdown
    )
    assert (
        "|  |  | icc minus ce | +2.00 [-] 1/1 (1/2 seeds) | +2.00 [-] 1/1 (1/2 seeds) |" in markdown
    )
    # the teachers' own paired difference: -1 on both seeds, so a zero-width interval
    (tdiff,) = results["teacher_differences"]
    assert (tdiff["teacher"], tdiff["reference"]) == ("icc", "ce")
    assert tdiff["last"]["ci95"] == [-1.0, -1.0] and tdiff["last"]["positive"] == 0
    assert ["", "", "icc minus ce", "-1.00 [-1.00, -1.00] 0/2"] in tables[1].rows
    # the answers lead: each KD student minus the student alone, then icc minus ce
    gain_ce, gain_icc, icc_ce = results["answers"]
    assert (gain_ce["teacher"], gain_ce["reference"]) == ("ce", None)
    assert gain_ce["last"]["values"] == {"0": 2.0, "1": 2.0} and gain_ce["last"]["positive"] == 2
    assert gain_icc["last"]["values"] == {"0": 4.0}  # seed 1 of the icc student is missing
    assert icc_ce == diff
    answers = tables[0]
    assert answers.rows == [
        ["kd from ce minus the student alone", "+2.00 [+2.00, +2.00] 2/2"],
        ["kd from icc minus the student alone", "+4.00 [-] 1/1 (1/2 seeds)"],
        ["kd from icc minus kd from ce", "+2.00 [-] 1/1 (1/2 seeds)"],
    ]
    assert answers.notes[0] == results["answers_summary"]
    assert answers.notes[0].startswith("At the last epoch, paired by seed: kd from ce adds 2.00")
    assert markdown.index("## what distillation adds") < markdown.index("## teachers on")


def test_t_interval_matches_the_t_table() -> None:
    # two values 1 and 3: mean 2, s = sqrt(2), s/sqrt(n) = 1, t(0.975, df 1) = 12.7062
    lo, hi = res.t_interval([1.0, 3.0])
    assert lo == pytest.approx(2 - 12.7062, abs=1e-4) and hi == pytest.approx(2 + 12.7062, abs=1e-4)
    # 1, 2, 3, 4: mean 2.5, s = 1.29099, s/sqrt(4) = 0.645497, t(0.975, df 3) = 3.18245
    lo, hi = res.t_interval([1.0, 2.0, 3.0, 4.0])
    assert (lo, hi) == pytest.approx((2.5 - 3.18245 * 0.645497, 2.5 + 3.18245 * 0.645497), abs=1e-4)
    # a 90% interval is narrower: t(0.95, df 3) = 2.35336
    lo90, _ = res.t_interval([1.0, 2.0, 3.0, 4.0], confidence=0.90)
    assert lo90 == pytest.approx(2.5 - 2.35336 * 0.645497, abs=1e-4)
    assert res.t_interval([5.0]) is None and res.t_interval([]) is None


def test_sign_count_counts_seeds_strictly_above_zero() -> None:
    stats = res.difference_stats({0: 0.5, 1: 0.0, 2: -0.2, 3: 1.5, 4: None}, 5)
    assert stats.positive == 2 and stats.n == 4  # 0.0 is not a gain; None is missing
    assert diff_cell(stats.to_json()).endswith(" 2/4 (4/5 seeds)")
    assert diff_cell(res.difference_stats({}, 3).to_json()) == "n/a (0/3 seeds)"
    one = res.difference_stats({0: -0.25}, 1)
    assert one.ci95 is None and diff_cell(one.to_json()) == "-0.25 [-] 0/1"


def test_label_smoothing_teacher_is_a_variant_not_the_reference(tmp_path: Path) -> None:
    ls = '[[teachers]]\nname = "ls"\nicc_weight = 0\nlabel_smoothing = 0.1\n\n'
    text = tiny_experiment(
        tmp_path, ('[[teachers]]\nname = "icc"', ls + '[[teachers]]\nname = "icc"')
    )
    exp = parse_experiment_text(text)
    assert [t.name for t in exp.teachers] == ["ce", "ls", "icc"]
    assert [t.cross_entropy for t in exp.teachers] == [True, False, False]
    results = collect(exp, {}).to_json()
    assert [d["teacher"] for d in results["differences"]] == ["ls", "icc"]
    assert results["teachers"][1]["objective"] == "CE (label smoothing 0.1)"


def _answer(values: dict[int, float | None], reference: str | None = None) -> dict:
    stats = res.difference_stats(values, len(values)).to_json()
    return {"student": "kd", "teacher": "icc", "reference": reference, "last": stats}


def test_the_answers_sentence_is_worded_from_the_numbers() -> None:
    from icckd_cli.commands.experiment.answers import answers_sentence

    # resolved gain: 4, 6, 5, 7 -> mean 5.5, s = 1.29099, t(0.975, 3) = 3.18245 -> [3.45, 7.55]
    up = _answer({0: 4.0, 1: 6.0, 2: 5.0, 3: 7.0})
    # unresolved: 1, -1, 2 -> mean 0.667, s/sqrt(3) = 0.8819, t(0.975, 2) = 4.3027: +- 3.795
    flat = _answer({0: 1.0, 1: -1.0, 2: 2.0}, reference="ce")
    # resolved loss: mean -2.75, s/sqrt(4) = 0.3227, t(0.975, 3) = 3.18245: [-3.78, -1.72]
    down = _answer({0: -2.0, 1: -3.0, 2: -2.5, 3: -3.5})
    one = _answer({0: 1.5})
    none = _answer({0: None, 1: None})
    assert answers_sentence([up, flat, down, one, none]) == (
        "At the last epoch, paired by seed: "
        "kd from icc adds 5.50 points over the student alone (the 95% interval lies above 0; "
        "4 of 4 seeds higher); "
        "kd from icc against kd from ce: +0.67 points, not resolved (the 95% interval "
        "[-3.13, +4.46] holds 0; 2 of 3 seeds higher); "
        "kd from icc loses 2.75 points against the student alone (the 95% interval lies below "
        "0; 4 of 4 seeds lower); "
        "kd from icc against the student alone: +1.50 points on one seed, too few for an "
        "interval; "
        "kd from icc against the student alone: no seed finished yet."
    )
    assert answers_sentence([]) == ""


def test_with_a_validation_split_the_best_column_is_best_on_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = tiny_experiment(tmp_path, ('name = "tiny"', 'name = "tiny"\nval_per_class = 5'))
    exp = parse_experiment_text(text)
    assert {r.config.val_per_class for r in exp.runs} == {5}  # every run holds out the same
    monkeypatch.setattr(
        FinishedRuns, "top1", lambda self, run, which="final": 80.0 if which == "best" else 79.0
    )
    results = collect(exp, {}).to_json()
    assert (results["val_per_class"], results["val_fraction"]) == (5, None)
    students = _students_table(result_tables(results))
    assert students.columns[-2:] == ["last epoch", "best on validation"]
    assert students.notes[-1] == (
        "best on validation: top-1 on the test split at the epoch of the highest top-1 on 5 "
        "images per class held out of the training split (never trained on)"
    )
    assert not any("flatters" in n for n in students.notes)
    markdown = results_markdown(results)
    assert "val per class 5" in markdown and "| best on validation |" in markdown
    # without one, the column says what it is: best on the test split
    plain = collect(parse_experiment_text(tiny_experiment(tmp_path)), {}).to_json()
    assert _students_table(result_tables(plain)).columns[-1] == "best epoch"
    assert "flatters" in _students_table(result_tables(plain)).notes[-1]
    assert validation_phrase({"val_fraction": 0.1}) == "10% of each class"


def _students_table(tables: list[TableSpec]) -> TableSpec:
    """The students' table (the accuracy-against-cost table follows it)."""
    return next(t for t in tables if t.title.startswith("students on"))
