"""A least-squares line of the student difference on the teacher difference, across seeds.

Each seed gives one point: x = teacher A minus teacher B (top-1 points), y = the student of A
minus the student of B. The line y = intercept + slope * x says how much of the student gain
follows the teachers' accuracy gap (`slope`) and how much is left when the teachers are equally
accurate (`intercept`, the student gain at x = 0), with its 95% Student-t interval on n - 2
degrees of freedom:

    slope = Sxy / Sxx,  intercept = ybar - slope * xbar
    s = sqrt(SSE / (n - 2)),  SE(intercept) = s * sqrt(1/n + xbar^2 / Sxx)
    interval = intercept +- t_{0.975, n-2} * SE(intercept)

Fewer than 3 seeds leave no degree of freedom for s: no line (None). Teacher differences that
are all equal (Sxx = 0) give no slope: the result says so (`slope`, `intercept` and the
interval are None, `degenerate` names why), rather than an infinite interval that reads like
a number. With few seeds the interval is wide (t_{0.975,1} = 12.71, t_{0.975,2} = 4.30).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from icckd_cli.base.errors import IcckdError

MIN_POINTS = 3  # a line through 2 points fits exactly: no residual, no interval
DEGENERATE_X = (
    "the teacher differences are equal on every seed, so no line can be fitted; the paired "
    "student difference alone answers at that teacher difference"
)


@dataclass(frozen=True)
class Line:
    """A fitted line y = intercept + slope * x with the intercept's interval (JSON: to_dict)."""

    n: int
    slope: float | None
    intercept: float | None
    intercept_se: float | None
    intercept_ci95: tuple[float, float] | None
    slope_se: float | None
    df: int
    t: float  # t_{(1 + confidence) / 2, df}, the multiplier of intercept_se
    degenerate: str | None = None  # why there is no slope, else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the interval as a list."""
        out = asdict(self)
        out["intercept_ci95"] = list(self.intercept_ci95) if self.intercept_ci95 else None
        return out


def fit_line(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> Line | None:
    """Least squares of y on x with the intercept's t-interval; None under 3 points."""
    from scipy.stats import t as student_t  # about 2 s to import: only a fit pays it

    if len(x) != len(y):
        raise IcckdError(f"a line needs as many x as y values ({len(x)} x, {len(y)} y)")
    if not 0 < confidence < 1:
        raise IcckdError(f"confidence must lie between 0 and 1 (got {confidence})")
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    bad = [v for v in xs + ys if not math.isfinite(v)]
    if bad:
        raise IcckdError(f"a line needs finite numbers (got {bad[0]}); drop the unfinished seed")
    n = len(xs)
    if n < MIN_POINTS:
        return None
    df = n - 2
    t = float(student_t.ppf(0.5 + confidence / 2, df))
    xbar, ybar = math.fsum(xs) / n, math.fsum(ys) / n
    sxx = math.fsum((a - xbar) ** 2 for a in xs)
    if sxx == 0.0:
        return Line(n, None, None, None, None, None, df, t, DEGENERATE_X)
    sxy = math.fsum((a - xbar) * (b - ybar) for a, b in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = ybar - slope * xbar
    sse = math.fsum((b - intercept - slope * a) ** 2 for a, b in zip(xs, ys, strict=True))
    s = math.sqrt(sse / df)
    se = s * math.sqrt(1 / n + xbar**2 / sxx)
    half = t * se
    ci = (intercept - half, intercept + half)
    return Line(n, slope, intercept, se, ci, s / math.sqrt(sxx), df, t)


def paired_line(
    teacher_diff: Mapping[int, float], student_diff: Mapping[int, float]
) -> Line | None:
    """fit_line over the seeds present in both mappings (by seed, in seed order)."""
    seeds = sorted(k for k in student_diff if k in teacher_diff)
    return fit_line([teacher_diff[k] for k in seeds], [student_diff[k] for k in seeds])
