"""commands/experiment/matched/rule.py: the epochs the matching rule picks on hand-made curves."""

from __future__ import annotations

import json

import pytest

from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.commands.experiment.matched.rule import (
    MATCH_NEEDS_VALIDATION,
    check_match_split,
    curve_from_history,
    first_reaching,
    match_seed,
    match_target,
)


def test_weaker_teacher_sets_the_target_stronger_stops_at_first_epoch_reaching_it() -> None:
    ce = [(1, 40.0), (2, 55.0), (3, 61.0), (4, 60.0)]  # best 61.0: the target
    icc = [(1, 45.0), (2, 58.0), (3, 62.5), (4, 61.0), (5, 66.0)]  # 62.5 is the first >= 61
    assert match_seed({"ce": ce, "icc": icc}) == {
        "target_val_top1": 61.0,
        "teachers": {"ce": {"epoch": 3, "val_top1": 61.0}, "icc": {"epoch": 3, "val_top1": 62.5}},
    }


def test_first_epoch_reaching_it_not_the_closest_value_later() -> None:
    # epoch 2 (70.0) reaches 61 first; epoch 4 (61.2) would be closer in value: the rule is the
    # first epoch reaching the target
    ce = [(1, 50.0), (2, 61.0)]
    icc = [(1, 50.0), (2, 70.0), (3, 65.0), (4, 61.2)]
    assert match_seed({"ce": ce, "icc": icc})["teachers"]["icc"] == {"epoch": 2, "val_top1": 70.0}


def test_the_teacher_whose_best_is_the_target_takes_its_first_best_epoch() -> None:
    # its best (61.0) is reached at epoch 2 and again at epoch 4: the first one
    ce = [(1, 40.0), (2, 61.0), (3, 59.0), (4, 61.0)]
    icc = [(1, 70.0)]
    m = match_seed({"ce": ce, "icc": icc})
    assert m["target_val_top1"] == 61.0
    assert m["teachers"]["ce"] == {"epoch": 2, "val_top1": 61.0}


def test_tied_bests_both_teachers_at_their_first_best() -> None:
    ce = [(2, 50.0), (4, 60.0), (6, 60.0)]  # evaluated every second epoch
    icc = [(2, 60.0), (4, 58.0), (6, 60.0)]
    m = match_seed({"ce": ce, "icc": icc})
    assert m == {
        "target_val_top1": 60.0,
        "teachers": {"ce": {"epoch": 4, "val_top1": 60.0}, "icc": {"epoch": 2, "val_top1": 60.0}},
    }


def test_target_reached_at_the_first_epoch() -> None:
    ce = [(1, 30.0), (2, 35.0)]  # best 35.0
    icc = [(1, 36.0), (2, 80.0)]  # already above 35.0 at epoch 1
    assert match_seed({"ce": ce, "icc": icc})["teachers"]["icc"] == {"epoch": 1, "val_top1": 36.0}


def test_every_teacher_reaches_the_target_by_construction() -> None:
    curves = {
        "a": [(1, 10.0), (2, 90.0), (3, 20.0)],
        "b": [(1, 33.3), (2, 33.2)],
        "c": [(1, 50.0), (2, 40.0), (3, 70.0)],
        "d": [(1, 33.3)],
    }
    m = match_seed(curves)
    assert m["target_val_top1"] == 33.3 == match_target(curves)
    for name, picked in m["teachers"].items():
        assert picked["val_top1"] >= m["target_val_top1"]
        earlier = [v for e, v in curves[name] if e < picked["epoch"]]
        assert all(v < m["target_val_top1"] for v in earlier)
    assert m["teachers"]["b"]["epoch"] == 1 and m["teachers"]["d"]["epoch"] == 1


def test_floats_compared_exactly_as_recorded() -> None:
    # 0.1 + 0.2 is recorded as 0.30000000000000004; a teacher at 0.3 (one ulp lower) has not
    # reached it and waits for its next epoch, however close
    high = 0.1 + 0.2
    ce = [(1, 0.2), (2, high)]
    icc = [(1, 0.3), (2, 0.5)]
    assert 0.3 < high
    m = match_seed({"ce": ce, "icc": icc})
    assert m["target_val_top1"] == high
    assert m["teachers"]["icc"] == {"epoch": 2, "val_top1": 0.5}
    assert m["teachers"]["ce"] == {"epoch": 2, "val_top1": high}


def test_json_round_trip_picks_the_same_epochs() -> None:
    # metrics.jsonl and the snapshots' metadata store floats as JSON: the same values come back
    history = [{"epoch": 1, "val_top1": 100 * 7 / 30}, {"epoch": 2, "val_top1": 100 * 11 / 30}]
    history += [{"epoch": 3, "top1": 1.0}]  # not evaluated on validation: no point
    other = [{"epoch": 1, "val_top1": 100 * 11 / 30}]
    back = [json.loads(json.dumps(r)) for r in history]
    assert (
        curve_from_history(back)
        == curve_from_history(history)
        == [
            (1, 100 * 7 / 30),
            (2, 100 * 11 / 30),
        ]
    )
    m = match_seed({"ce": curve_from_history(back), "icc": curve_from_history(other)})
    assert m["teachers"]["ce"]["epoch"] == 2 and m["teachers"]["icc"]["epoch"] == 1


def test_single_teacher_matches_its_own_best() -> None:
    assert match_seed({"ce": [(1, 3.0), (2, 5.0), (3, 4.0)]}) == {
        "target_val_top1": 5.0,
        "teachers": {"ce": {"epoch": 2, "val_top1": 5.0}},
    }


def test_each_teacher_seed_is_matched_on_its_own_curves() -> None:
    # the experiment calls match_seed once per teacher seed (matched/plan.py)
    per_seed = {
        0: {"ce": [(1, 50.0)], "icc": [(1, 60.0)]},
        1: {"ce": [(1, 70.0), (2, 71.0)], "icc": [(1, 65.0), (2, 64.0)]},
    }
    out = {seed: match_seed(curves) for seed, curves in per_seed.items()}
    assert out[0]["target_val_top1"] == 50.0 and out[1]["target_val_top1"] == 65.0
    assert out[0]["teachers"] == {
        "ce": {"epoch": 1, "val_top1": 50.0},
        "icc": {"epoch": 1, "val_top1": 60.0},
    }
    assert out[1]["teachers"] == {
        "ce": {"epoch": 1, "val_top1": 70.0},
        "icc": {"epoch": 1, "val_top1": 65.0},
    }


def test_first_reaching_an_unreachable_target_refused() -> None:
    with pytest.raises(IcckdError, match="no evaluated epoch reaches"):
        first_reaching([(1, 1.0)], 2.0)


@pytest.mark.parametrize(
    ("curves", "says"),
    [
        ({}, "no teachers to match"),
        ({"ce": [(1, 1.0)], "icc": []}, "teacher 'icc' has no evaluated epoch"),
        ({"ce": [(2, 1.0), (1, 2.0)]}, "not in increasing order ([2, 1])"),
        ({"ce": [(1, 1.0), (1, 2.0)]}, "not in increasing order ([1, 1])"),
        ({"ce": [(1, float("nan"))]}, "validation top-1 of nan"),
    ],
)
def test_bad_curves_refused_in_one_line(curves: dict, says: str) -> None:
    with pytest.raises(IcckdError) as err:
        match_seed(curves)
    assert says in err.value.message and "\n" not in err.value.message


def test_match_needs_a_validation_split() -> None:
    with pytest.raises(UsageError) as err:
        check_match_split(True, None, None)
    assert err.value.message == (
        "match_teachers needs a validation split (val_per_class or val_fraction in "
        "[experiment]); matching on the test split would choose on the numbers it reports"
    )
    assert err.value.message == MATCH_NEEDS_VALIDATION and err.value.exit_code == 2
    check_match_split(True, 5, None)
    check_match_split(True, None, 0.1)
    check_match_split(False, None, None)
