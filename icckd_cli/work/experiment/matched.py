"""Accuracy-matched teachers (issue 29): which epoch of each teacher its students distill from.

For one teacher seed, every teacher's validation curve is the list of (epoch, val_top1) of its
evaluated epochs. The target is the lowest of the teachers' best validation top-1; each teacher
contributes the first evaluated epoch whose val_top1 reaches the target (>=). The teacher whose
best is the target reaches it by construction (its best is one of its recorded values), so no
teacher can miss it. Values are compared exactly as recorded (floats, no tolerance): a JSON round
trip (metrics.jsonl, the snapshots' metadata) gives back the same float, so the rule picks the
same epochs from either source. The choice reads validation numbers only.

Design note for wiring (the lead's, after the split of work/experiment):
- `[experiment] match_teachers = true` (bool, default false) goes in ExperimentOptions. Without a
  validation split it is refused before any work: call `check_match_split` in parse_experiment
  once the options are validated, outside the pydantic validators (whose errors get a
  "FILE: [experiment]:" prefix), so the CLI prints exactly `error: ` + MATCH_NEEDS_VALIDATION.
- Teacher runs keep their weights at each evaluated epoch: in work/runs.py `_fit`, `on_event`,
  on `event == "epoch"` with `"val_top1" in info` and `dist.is_main()`, call
  `training.snapshots.save_snapshot(out, info["epoch"], model, info["val_top1"], meta)` with
  `model` the unwrapped model (not DDP or compiled) and `meta` what the final checkpoint gets
  except metrics (kind, arch, num_classes, model_args, dataset, config, seed, objective,
  extra_meta; all known before the Trainer starts), so a snapshot loads as a teacher with
  load_any_model. Turn it on by an execution option of the teacher config that check_reusable
  ignores (add it to IGNORED_ON_REUSE), set for every experiment teacher run when a validation
  split exists: then switching match_teachers re-plans only the students. A finished teacher
  without RUN/epochs/ (made before this) is refused in one line naming the folder to delete.
  On a fresh start `clear_snapshots(out)` (beside the tensorboard events in start_run_dir), on
  --resume `clear_snapshots(out, state.epoch)`. One snapshot (measured): resnet8 0.32 MB,
  resnet20 1.11 MB, resnet56 3.47 MB, times the evaluated epochs.
- Students: plan() cannot know the epoch ahead, so a matched student's `teacher` is resolved
  just before it runs (its teachers, all of teacher seed teacher_seeds[i mod n], are done by
  then in plan order): curves = {name: snapshot_curve(teacher run dir)}, `match_seed(curves)`,
  then `teacher = snapshot_path(teacher run dir, epoch)`; distill loads it as any teacher.
  Matched students live in their own folders (e.g. OUT/students-matched/<teacher>/<student>/
  seed<k>) so the unmatched ones stay reusable when match_teachers is switched back; a shared
  teacher-output store must be keyed by the snapshot too. load_teacher adds
  `info["epoch"] = (snapshot_epoch(meta) or {}).get("epoch")`; its `info["sha256"]` (the
  weights' hash) equals the snapshot's recorded weights_sha256, so check_student_teacher keeps
  working; the file's sha256 (`Checkpoint.file_sha256`) goes in results.json beside the epoch.
- results.json gains, per teacher seed, `matched = {target_val_top1, teachers: {name: {epoch,
  val_top1, test_top1}}}`: `match_seed` gives all but test_top1, which is `top1` of that
  epoch's record in the teacher's metrics.jsonl (validation epochs are test epochs too). Tables
  and results.md say "students of accuracy-matched teachers". Answers comparing two teachers'
  students add the paired teacher difference and, with >= 3 seeds,
  `metrics.regression.paired_line(teacher_diff, student_diff).to_dict()`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from icckd_cli.base.errors import IcckdError, UsageError

MATCH_NEEDS_VALIDATION = (
    "match_teachers needs a validation split (val_per_class or val_fraction in [experiment]); "
    "matching on the test split would choose on the numbers it reports"
)

Curve = Sequence[tuple[int, float]]  # (epoch, val_top1) of the evaluated epochs, in order


def check_match_split(
    match_teachers: bool, val_per_class: int | None, val_fraction: float | None
) -> None:
    """Refuse match_teachers without a validation split (before any work)."""
    if match_teachers and val_per_class is None and val_fraction is None:
        raise UsageError(MATCH_NEEDS_VALIDATION)


def curve_from_history(history: Iterable[Mapping[str, Any]]) -> list[tuple[int, float]]:
    """(epoch, val_top1) of the records that carry a validation top-1 (metrics.jsonl's lines)."""
    return [(int(r["epoch"]), r["val_top1"]) for r in history if r.get("val_top1") is not None]


def _check_curve(name: str, curve: Curve) -> None:
    if not curve:
        raise IcckdError(
            f"teacher '{name}' has no evaluated epoch with a validation top-1; it cannot be "
            "matched: rerun it with a validation split"
        )
    epochs = [e for e, _ in curve]
    if any(b <= a for a, b in zip(epochs, epochs[1:], strict=False)):
        raise IcckdError(
            f"teacher '{name}': its evaluated epochs are not in increasing order ({epochs}); "
            "its records are damaged: rerun it"
        )
    bad = [v for _, v in curve if not math.isfinite(v)]
    if bad:
        raise IcckdError(f"teacher '{name}' has a validation top-1 of {bad[0]}; rerun it")


def match_target(curves: Mapping[str, Curve]) -> float:
    """The lowest of the teachers' best validation top-1."""
    if not curves:
        raise IcckdError("no teachers to match")
    for name, curve in curves.items():
        _check_curve(name, curve)
    return min(max(v for _, v in curve) for curve in curves.values())


def first_reaching(curve: Curve, target: float) -> tuple[int, float]:
    """The first (epoch, val_top1) whose val_top1 >= target, compared exactly as recorded."""
    for epoch, value in curve:
        if value >= target:
            return epoch, value
    # unreachable when target comes from match_target over this curve
    raise IcckdError(f"no evaluated epoch reaches the target validation top-1 {target}")


def match_seed(curves: Mapping[str, Curve]) -> dict[str, Any]:
    """{target_val_top1, teachers: {name: {epoch, val_top1}}} for one teacher seed."""
    target = match_target(curves)
    teachers = {}
    for name, curve in curves.items():
        epoch, value = first_reaching(curve, target)
        teachers[name] = {"epoch": epoch, "val_top1": value}
    return {"target_val_top1": target, "teachers": teachers}
