"""The matching rule: which epoch of each teacher its students distill from.

For one teacher seed, every teacher's validation curve is the list of (epoch, val_top1) of its
evaluated epochs. The target is the lowest of the teachers' best validation top-1; each teacher
contributes the first evaluated epoch whose val_top1 reaches the target (>=). The teacher whose
best is the target reaches it by construction (its best is one of its recorded values), so no
teacher can miss it. Values are compared exactly as recorded (floats, no tolerance): a JSON round
trip (metrics.jsonl, the snapshots' metadata) gives back the same float, so the rule picks the
same epochs from either source. The choice reads validation numbers only.

Where it is wired: `check_match_split` refuses match_teachers without a validation split
(experiment/config.py); plan.py asks `match_seed` for each teacher seed's epochs once its
teachers are done; snapshots.py keeps the teachers' epochs and records the one a student read.
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
