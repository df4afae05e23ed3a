"""The negative-transfer table of an experiment (the numbers: measures.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from icckd_cli.commands.experiment.result_types import TRANSFER_KEYS
from icckd_cli.commands.experiment.tables import TableSpec


def _num(x: Any, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def transfer_table(results: Mapping[str, Any]) -> TableSpec | None:
    """Per student method and teacher: worse seeds, negative flip rate, teacher agreement."""
    rows = []
    for r in results.get("students", []):
        if not any(k in r for k in TRANSFER_KEYS):
            continue
        worse = r.get("kd_worse_seeds")
        n = r["last"]["n"]
        rows.append([r["student"], r["teacher"], "n/a" if worse is None else f"{worse}/{n}",
                     _num(r.get("negative_flip_rate")), _num(r.get("agreement"))])  # fmt: skip
    if not rows:
        return None
    notes = [
        "worse seeds: seeds where the distilled student ends below the student alone (last "
        "epoch); negative flips: % of test images the student alone gets right and the "
        "distilled student wrong (Yan et al., CVPR 2021), mean over seeds; agreement: % of "
        "test images where student and teacher predict the same class (Stanton et al., "
        "NeurIPS 2021); n/a: no student alone, or runs without predictions.npy",
    ]
    columns = ["student", "teacher", "worse seeds", "negative flips %", "agreement %"]
    title = "negative transfer (test split, last epoch)"
    return TableSpec(title, columns, rows, notes, key="transfer")
