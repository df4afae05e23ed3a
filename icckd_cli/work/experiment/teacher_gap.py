"""The part of a student gain its teacher's accuracy does not explain (issue 29), in the results.

Every answer comparing two teachers' students (kd from icc minus kd from ce, paired by student
seed) gains the paired difference of the teachers those students read, per student seed:

    teacher_difference   difference_stats of teacher A minus teacher B (top-1 points, test)
    line                 with >= 3 seeds: the least-squares line of student difference on
                         teacher difference (metrics/regression.py: slope, intercept, the
                         intercept's 95% interval); None with fewer

The teacher's accuracy is that of the weights the students read: the last epoch's test top-1
(model.safetensors), or under match_teachers the matched epoch's (results["matched"]). Student
seed i reads teacher seed teacher_seeds[i mod n].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from icckd_cli.metrics.regression import paired_line
from icckd_cli.work.experiment.results import difference_stats, paired_difference

if TYPE_CHECKING:
    from icckd_cli.work.experiment.config import Experiment


def add_teacher_gaps(exp: Experiment, results: dict[str, Any]) -> None:
    """results.json's `match_teachers`, `matched` (per teacher seed) and each answer's gap."""
    from icckd_cli.work.experiment.matching_plan import matched_results

    results["match_teachers"] = bool(exp.options.match_teachers)
    if exp.options.match_teachers:
        results["matched"] = matched_results(exp)
    add_teacher_gap(results, teacher_accuracy(results))


def teacher_accuracy(results: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    """{teacher: {student seed: test top-1 of the teacher weights that seed's students read}}."""
    seeds = list(results["seeds"])
    tseeds = list(results.get("teacher_seeds") or seeds)
    matched = results.get("matched")
    out: dict[str, dict[int, float]] = {}
    for t in results["teachers"]:
        values = out[t["name"]] = {}
        for i, seed in enumerate(seeds):
            tseed = str(tseeds[i % len(tseeds)])
            if matched is not None:
                chosen = ((matched.get(tseed) or {}).get("teachers") or {}).get(t["name"])
                value = None if chosen is None else chosen.get("test_top1")
            else:
                value = t["top1"]["values"].get(tseed)
            if value is not None:
                values[seed] = float(value)
    return out


def add_teacher_gap(
    results: dict[str, Any], teacher_acc: Mapping[str, Mapping[int, float]]
) -> None:
    """Each answer between two teachers' students gains teacher_difference and line."""
    n = len(results["seeds"])
    seen: set[int] = set()
    for d in [*results.get("answers", []), *results.get("differences", [])]:
        if d.get("reference") is None or id(d) in seen:
            continue
        seen.add(id(d))
        ours, ref = teacher_acc.get(d["teacher"], {}), teacher_acc.get(d["reference"], {})
        gap = paired_difference(ours, ref)  # type: ignore[arg-type]
        student = {int(k): v for k, v in d["last"]["values"].items()}
        d["teacher_difference"] = difference_stats(gap, n)
        line = paired_line(gap, student)
        d["line"] = None if line is None else line.to_dict()
