"""The teacher-output store: a frozen teacher's outputs on one augmentation stream, on disk.

Every student of a teacher that sees the same augmented batches would repeat the same
teacher passes. The store runs the teacher once over every batch of every epoch of one
stream (data order, crops and flips, fixed by a data seed) and keeps its logits, and its
pooled penultimate features where a term needs them (RKD, CRD); students read them
memory-mapped and never run the teacher. Like the fast-KD framework (Shen & Xing, ECCV
2022), which stores a teacher's soft labels per augmented view, it can keep only the top-k
logits of each row (see `rebuild_logits` for the rest).

format.py holds the files, their names and checksums; progress.py the record of a write
under way, with the checksums that let a killed one resume safely; writer.py writes a store
(one process at a time: lock.py); reader.py checks a complete one and reads it; run.py joins
them for a distill run.
"""

from icckd_cli.training.store.format import (
    CHUNK,
    COMPLETE,
    FORMAT_VERSION,
    HEADER,
    PROGRESS,
    Layout,
    check_match,
    identity,
    rows_per_epoch,
    shard_folder,
    status,
    subset_hash,
)
from icckd_cli.training.store.lock import LOCK, writer_lock
from icckd_cli.training.store.reader import StoreReader, open_store, rebuild_logits
from icckd_cli.training.store.run import cached_teacher
from icckd_cli.training.store.writer import SAVE_EVERY, ensure_store

__all__ = [
    "CHUNK",
    "COMPLETE",
    "FORMAT_VERSION",
    "HEADER",
    "LOCK",
    "PROGRESS",
    "SAVE_EVERY",
    "Layout",
    "StoreReader",
    "cached_teacher",
    "check_match",
    "ensure_store",
    "identity",
    "open_store",
    "rebuild_logits",
    "rows_per_epoch",
    "shard_folder",
    "status",
    "subset_hash",
    "writer_lock",
]
