"""A store's progress record: how many batches are written, and checksums of their rows.

A killed write continues from the batches its record counts, and complete.json's checksums
are computed only when the store is sealed, so without more the rows written before a
writer died would never be checked again: damage to them (a zeroed disk block) would be
sealed under fresh checksums. So each record also keeps one SHA-256 per stretch of batches
written since the record before (`checksums`: [[batches, hex], ...], every array's rows of
the stretch, in array order), and a resumed write re-reads and checks every stretch first;
it keeps the batches up to the first one that differs and writes the rest again.

Batches fill the arrays epoch by epoch and row by row, so the rows of the first `b` batches
are a prefix of each array flattened to (E * R, ...): cheap to find, hashed once on writing
and once on resuming.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from icckd_cli.base.atomic import write_text_atomic
from icckd_cli.training.store.format import PROGRESS, Layout, read_json


def rows_before(layout: Layout, batches: int) -> int:
    """How many rows of an array flattened to (E * R, ...) the first `batches` batches fill."""
    epochs, step = divmod(batches, layout.steps)
    return epochs * layout.rows + min(step * layout.batch_size, layout.rows)


def rows_sum(arrays: dict[str, Any], layout: Layout, start: int, end: int) -> str:
    """SHA-256 (hex) of every array's rows of batches start..end-1, in array order."""
    lo, hi = rows_before(layout, start), rows_before(layout, end)
    h = hashlib.sha256()
    for arr in arrays.values():
        flat = arr.reshape(layout.epochs * layout.rows, -1)  # a view: rows in write order
        h.update(flat[lo:hi].tobytes())
    return h.hexdigest()


def read_progress(folder: Path) -> tuple[int, list[tuple[int, str]]]:
    """The batches a record counts and its checksums; (0, []) when it is missing or unreadable."""
    record = read_json(folder / PROGRESS) or {}
    try:
        done = int(record.get("batches", 0))
        sums = [(int(end), str(hex_)) for end, hex_ in record.get("checksums") or []]
    except (TypeError, ValueError):
        return 0, []
    return max(done, 0), sums


def verified(
    arrays: dict[str, Any], layout: Layout, done: int, sums: list[tuple[int, str]]
) -> tuple[int, list[tuple[int, str]]]:
    """The batches whose rows match their checksums, up to the first that differs, and those
    checksums. Batches with no checksum (an earlier icckd's record) count as differing."""
    good, kept = 0, []
    for end, hex_ in sums:
        if not good < end <= done or rows_sum(arrays, layout, good, end) != hex_:
            break
        good = end
        kept.append((end, hex_))
    return good, kept


def save_progress(
    folder: Path, arrays: dict[str, Any], layout: Layout, done: int, sums: list[tuple[int, str]]
) -> None:
    """Flush the arrays, add the checksum of the batches since the last record, record both.

    `sums` is updated in place.
    """
    for arr in arrays.values():
        arr.flush()
    start = sums[-1][0] if sums else 0
    if done > start:
        sums.append((done, rows_sum(arrays, layout, start, done)))
    record = {"batches": done, "checksums": [list(s) for s in sums]}
    write_text_atomic(folder / PROGRESS, json.dumps(record) + "\n")
