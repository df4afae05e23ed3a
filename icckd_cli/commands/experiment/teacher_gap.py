"""The part of a student gain its teacher's accuracy does not explain, in the results.

Every answer comparing two teachers' students (kd from icc minus kd from ce, paired by student
seed) gains the paired difference of the teachers those students read, per student seed:

    teacher_difference   difference_stats of teacher A minus teacher B (top-1 points, test)
    line                 with >= 3 seeds: the least-squares line of student difference on
                         teacher difference (metrics/regression.py: slope, intercept, the
                         intercept's 95% interval); None with fewer

The teacher's accuracy is that of the weights the students read: the last epoch's test top-1
(model.safetensors), or under match_teachers the matched epoch's (`matched`). Student
seed i reads teacher seed teacher_seeds[i mod n].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from icckd_cli.commands.experiment.matched.plan import matched_results
from icckd_cli.commands.experiment.plan import Experiment
from icckd_cli.commands.experiment.result_types import Answer, ExperimentResults, TeacherGap
from icckd_cli.commands.experiment.results import difference_stats, paired_difference
from icckd_cli.metrics.regression import paired_line


def with_teacher_gaps(exp: Experiment, results: ExperimentResults) -> ExperimentResults:
    """The results with `match_teachers`, `matched` (per teacher seed) and each answer's gap."""
    on = bool(exp.options.match_teachers)
    out = replace(results, match_teachers=on, matched=matched_results(exp) if on else None)
    return with_gaps(out, teacher_accuracy(out))


def teacher_accuracy(results: ExperimentResults) -> dict[str, dict[int, float]]:
    """{teacher: {student seed: test top-1 of the teacher weights that seed's students read}}."""
    seeds, tseeds = results.setup.seeds, results.setup.teacher_seeds
    matched = results.matched
    out: dict[str, dict[int, float]] = {}
    for t in results.teachers:
        values = out[t.name] = {}
        for i, seed in enumerate(seeds):
            tseed = tseeds[i % len(tseeds)]
            if matched is not None:
                chosen = matched[tseed].teachers.get(t.name) if tseed in matched else None
                value = None if chosen is None else chosen.test_top1
            else:
                value = t.top1.values.get(str(tseed))
            if value is not None:
                values[seed] = float(value)
    return out


def answer_gap(answer: Answer, teacher_acc: Mapping[str, Mapping[int, float]], n: int) -> Answer:
    """An answer between two teachers' students with its teacher gap; others as they are."""
    if answer.reference is None:
        return answer
    ours, ref = teacher_acc.get(answer.teacher, {}), teacher_acc.get(answer.reference, {})
    gap = paired_difference(ours, ref)  # type: ignore[arg-type]
    student = {int(k): v for k, v in answer.last.values.items()}
    line = paired_line(gap, student)
    found = TeacherGap(difference_stats(gap, n), None if line is None else line.to_dict())
    return replace(answer, gap=found)


def with_gaps(
    results: ExperimentResults, teacher_acc: Mapping[str, Mapping[int, float]]
) -> ExperimentResults:
    """Each answer (and difference) between two teachers' students gains its teacher gap."""
    n = len(results.setup.seeds)
    answers = [answer_gap(a, teacher_acc, n) for a in results.answers]
    differences = [answer_gap(d, teacher_acc, n) for d in results.differences]
    return replace(results, answers=answers, differences=differences)
