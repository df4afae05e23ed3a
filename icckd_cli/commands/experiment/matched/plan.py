"""Accuracy-matched teachers in the matrix: the plan, the checks, each student's teacher.

Under `match_teachers = true` every teacher run keeps its weights at each evaluated epoch
(RUN/epochs/, training/snapshots.py) and the students live in their own folders,

    OUT/students-matched/<teacher>/<student>/seed<k>/   distilled from a matched epoch
    OUT/teacher_cache-matched/<teacher>/seed<k>/        their shared teacher outputs

so the unmatched students under OUT/students/ stay valid and are reused when match_teachers is
switched back. Which epoch a student reads is known only once its seed's teachers are done:
`resolve_teacher` points its --teacher at that snapshot just before it runs (in plan order the
teachers come first). The choice reads validation numbers only (rule.py); the folders
themselves are planned in plan.py (`match_plan`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.commands.experiment.matched.rule import curve_from_history, match_seed
from icckd_cli.commands.experiment.plan import Experiment, Run
from icckd_cli.commands.experiment.result_types import MatchedSeed, MatchedTeacher


def _teacher_dir(exp: Experiment, name: str, tseed: int) -> Path:
    return Path(exp.options.out) / "teachers" / name / f"seed{tseed}"


def check_matchable(exp: Experiment) -> None:
    """Before any work: a teacher run made without snapshots cannot be matched; say which."""
    from icckd_cli.training.rundir import METRICS_FILE
    from icckd_cli.training.snapshots import list_snapshots

    if not exp.options.match_teachers:
        return
    for run in (r for r in exp.runs if r.kind == "teacher" and r.status() != "new"):
        evaluated = (run.out / METRICS_FILE).is_file() and _curve(run.out)
        if evaluated and not list_snapshots(run.out):
            raise UsageError(
                f"{run.out} was trained without epoch snapshots (before match_teachers); "
                "delete that folder to retrain the teacher, or set match_teachers = false"
            )


def _curve(run_dir: Path) -> list[tuple[int, float]]:
    from icckd_cli.training.rundir import read_metrics

    return curve_from_history(read_metrics(run_dir))


def seed_curves(exp: Experiment, tseed: int) -> dict[str, list[tuple[int, float]]]:
    """{teacher: (epoch, val_top1) of its snapshots} of one teacher seed, checked whole."""
    from icckd_cli.training.snapshots import snapshot_curve

    curves = {}
    for t in exp.teachers:
        folder = _teacher_dir(exp, t.name, tseed)
        kept, logged = snapshot_curve(folder), _curve(folder)
        if kept != logged:
            shown = [e for e, _ in kept]
            raise IcckdError(
                f"{folder}: its epoch snapshots (epochs {shown}) do not match its evaluated "
                f"epochs (epochs {[e for e, _ in logged]}); delete that folder to retrain it"
            )
        curves[t.name] = kept
    return curves


def seed_match(exp: Experiment, tseed: int, memo: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """match_seed of a teacher seed whose teachers are done, with each epoch's test top-1."""
    from icckd_cli.training.rundir import read_metrics

    if tseed not in memo:
        match = match_seed(seed_curves(exp, tseed))
        for name, chosen in match["teachers"].items():
            history = read_metrics(_teacher_dir(exp, name, tseed))
            record = next(r for r in history if r.get("epoch") == chosen["epoch"])
            chosen["test_top1"] = record.get("top1")
        memo[tseed] = match
    return memo[tseed]


def resolve_teacher(
    exp: Experiment, run: Run, memo: dict[int, dict[str, Any]], required: bool = True
) -> None:
    """Point a matched student's --teacher at its teacher's matched snapshot (else nothing).

    Its seed's teachers must be done (in plan order they are); `required=False` (--dry-run)
    leaves a student whose teachers are not done as planned.
    """
    from icckd_cli.training.snapshots import snapshot_path

    if not exp.options.match_teachers or run.kind != "student" or run.teacher_seed is None:
        return
    if not required and not _seed_done(exp, run.teacher_seed):
        return
    epoch = seed_match(exp, run.teacher_seed, memo)["teachers"][run.teacher]["epoch"]
    teacher = snapshot_path(_teacher_dir(exp, str(run.teacher), run.teacher_seed), epoch)
    run.config = run.config.model_copy(update={"teacher": teacher})


def _seed_done(exp: Experiment, tseed: int) -> bool:
    return all(r.status() == "done" for r in exp.runs if r.kind == "teacher" and r.seed == tseed)


def matched_results(exp: Experiment) -> dict[int, MatchedSeed] | None:
    """results.json's `matched`: per teacher seed whose teachers are all done; None when off."""
    if not exp.options.match_teachers:
        return None
    used = sorted({r.teacher_seed for r in exp.runs if r.teacher_seed is not None})
    memo: dict[int, dict[str, Any]] = {}
    out = {}
    for tseed in used:
        if _seed_done(exp, tseed):
            match = seed_match(exp, tseed, memo)
            teachers = {name: MatchedTeacher(c["epoch"], c["val_top1"], c.get("test_top1"))
                        for name, c in match["teachers"].items()}  # fmt: skip
            out[tseed] = MatchedSeed(match["target_val_top1"], teachers)
    return out
