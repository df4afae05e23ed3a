"""metrics/regression.py: the line of student difference on teacher difference, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from icckd_cli.base.errors import IcckdError
from icckd_cli.metrics.regression import DEGENERATE_X, Line, fit_line, paired_line


def test_three_seeds_by_hand() -> None:
    # x = [1, 2, 3], y = [2, 3, 5]
    # xbar = 2, ybar = 10/3
    # Sxx = (1-2)^2 + 0 + (3-2)^2 = 2
    # Sxy = (-1)(2 - 10/3) + 0 + (1)(5 - 10/3) = 4/3 + 5/3 = 3
    # slope = Sxy / Sxx = 3/2 = 1.5; intercept = 10/3 - 1.5 * 2 = 1/3
    # fitted: 11/6, 20/6, 29/6; residuals: +1/6, -2/6, +1/6
    # SSE = 1/36 + 4/36 + 1/36 = 1/6; df = n - 2 = 1; s^2 = 1/6
    # SE(intercept) = s * sqrt(1/n + xbar^2/Sxx) = sqrt(1/6 * (1/3 + 4/2)) = sqrt(7/18) = 0.62361
    # SE(slope) = s / sqrt(Sxx) = sqrt(1/12) = 0.28868
    # t_{0.975, 1} = 12.7062; half width = 12.7062 * 0.62361 = 7.9237
    # interval = [1/3 - 7.9237, 1/3 + 7.9237] = [-7.5903, 8.2570]
    line = fit_line([1, 2, 3], [2, 3, 5])
    assert line is not None
    assert line.n == 3 and line.df == 1 and line.degenerate is None
    assert line.slope == pytest.approx(1.5, abs=1e-12)
    assert line.intercept == pytest.approx(1 / 3, abs=1e-12)
    assert line.intercept_se == pytest.approx(math.sqrt(7 / 18), abs=1e-12)
    assert line.slope_se == pytest.approx(math.sqrt(1 / 12), abs=1e-12)
    assert line.t == pytest.approx(12.7062, abs=1e-4)
    lo, hi = line.intercept_ci95  # type: ignore[misc]
    assert lo == pytest.approx(-7.5903, abs=1e-4)
    assert hi == pytest.approx(8.2570, abs=1e-4)


def test_four_seeds_by_hand() -> None:
    # x = [-1, 0, 1, 2], y = [1, 1, 3, 3]
    # xbar = 0.5, ybar = 2; Sxx = 2.25 + 0.25 + 0.25 + 2.25 = 5
    # Sxy = (-1.5)(-1) + (-0.5)(-1) + (0.5)(1) + (1.5)(1) = 4; slope = 0.8
    # intercept = 2 - 0.8 * 0.5 = 1.6
    # fitted: 0.8, 1.6, 2.4, 3.2; residuals: 0.2, -0.6, 0.6, -0.2
    # SSE = 0.04 + 0.36 + 0.36 + 0.04 = 0.8; df = 2; s^2 = 0.4
    # SE(intercept) = sqrt(0.4 * (1/4 + 0.25/5)) = sqrt(0.4 * 0.3) = sqrt(0.12) = 0.34641
    # t_{0.975, 2} = 4.3027; half width = 4.3027 * 0.34641 = 1.49049
    line = fit_line([-1, 0, 1, 2], [1, 1, 3, 3])
    assert line is not None and line.df == 2
    assert line.slope == pytest.approx(0.8, abs=1e-12)
    assert line.intercept == pytest.approx(1.6, abs=1e-12)
    assert line.intercept_se == pytest.approx(math.sqrt(0.12), abs=1e-12)
    assert line.t == pytest.approx(4.3027, abs=1e-4)
    lo, hi = line.intercept_ci95  # type: ignore[misc]
    assert lo == pytest.approx(1.6 - 1.49049, abs=1e-4)
    assert hi == pytest.approx(1.6 + 1.49049, abs=1e-4)


def test_agrees_with_scipy_linregress() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(1.0, 2.0, 6)
    y = 0.4 * x + 0.9 + rng.normal(0.0, 0.5, 6)
    ref = stats.linregress(x, y)
    line = fit_line(list(x), list(y))
    assert line is not None
    assert line.slope == pytest.approx(ref.slope, rel=1e-10)
    assert line.intercept == pytest.approx(ref.intercept, rel=1e-10)
    assert line.intercept_se == pytest.approx(ref.intercept_stderr, rel=1e-10)
    assert line.slope_se == pytest.approx(ref.stderr, rel=1e-10)
    half = stats.t.ppf(0.975, 4) * ref.intercept_stderr
    assert line.intercept_ci95 == pytest.approx((ref.intercept - half, ref.intercept + half))


def test_under_three_seeds_no_line() -> None:
    assert fit_line([], []) is None
    assert fit_line([1.0], [2.0]) is None
    assert fit_line([1.0, 2.0], [2.0, 5.0]) is None


def test_equal_teacher_differences_say_why() -> None:
    line = fit_line([0.5, 0.5, 0.5], [1.0, 2.0, 4.0])
    assert line is not None and line.n == 3
    assert line.slope is None and line.intercept is None and line.intercept_ci95 is None
    assert line.degenerate == DEGENERATE_X


def test_points_on_a_line_give_a_zero_width_interval() -> None:
    # y = 2 - x exactly: no residual, so s = 0 and the interval is the intercept itself
    line = fit_line([0, 1, 3], [2, 1, -1])
    assert line is not None
    assert line.slope == pytest.approx(-1.0) and line.intercept == pytest.approx(2.0)
    assert line.intercept_se == pytest.approx(0.0, abs=1e-12)
    assert line.intercept_ci95 == pytest.approx((2.0, 2.0))


def test_to_dict_is_json_ready() -> None:
    line = fit_line([1, 2, 3], [2, 3, 5])
    assert isinstance(line, Line)
    d = line.to_dict()
    assert set(d) == {"n", "slope", "intercept", "intercept_se", "intercept_ci95", "slope_se",
                      "df", "t", "degenerate"}  # fmt: skip
    assert isinstance(d["intercept_ci95"], list) and len(d["intercept_ci95"]) == 2


def test_paired_line_pairs_by_seed() -> None:
    # seed 9 has no student difference (unfinished): left out; order of keys does not matter
    teacher = {2: 3.0, 0: 1.0, 1: 2.0, 9: 40.0}
    student = {1: 3.0, 0: 2.0, 2: 5.0}
    line = paired_line(teacher, student)
    assert line is not None and line.n == 3
    assert line.intercept == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("x", "y", "says"),
    [
        ([1, 2, 3], [1, 2], "as many x as y values (3 x, 2 y)"),
        ([1, 2, float("nan")], [1, 2, 3], "finite numbers (got nan)"),
    ],
)
def test_bad_input_refused_in_one_line(x: list[float], y: list[float], says: str) -> None:
    with pytest.raises(IcckdError, match=r"^[^\n]*$") as err:
        fit_line(x, y)
    assert says in err.value.message
