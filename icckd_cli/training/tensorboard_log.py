"""TensorBoard event files of a run: every figure of metrics.jsonl, per epoch, under fixed tags.

The `tensorboard` package is an optional extra. The setting is True (required: a missing
package is a one-line error), False (off) or None, the default: on when the package is
installed, silently off otherwise, so a run that did not ask for event files never fails
for them. The step is the epoch, counted from 1 as in metrics.jsonl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from icckd_cli.base.errors import UsageError
from icckd_cli.training.rundir import EVENTS_GLOB, TENSORBOARD_DIR

INSTALL = "pip install -e '.[tensorboard]'"
# metrics.jsonl keys -> tags; train_<part> becomes train/<part> (loss parts, gate, negatives)
TAGS = {
    "top1": "test/top1",
    "top5": "test/top5",
    "nll": "test/nll",
    "ece": "test/ece",
    "val_top1": "val/top1",
    "val_top5": "val/top5",
    "val_nll": "val/nll",
    "val_ece": "val/ece",
    "lr": "opt/lr",
    "images_per_s": "speed/images_per_s",
    "time": "speed/epoch_s",
}


def tag_values(record: dict[str, Any]) -> dict[str, float]:
    """The scalars of one metrics.jsonl record by tag; the record's epoch is their step."""
    out = {}
    for key, value in record.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        tag = f"train/{key[6:]}" if key.startswith("train_") else TAGS.get(key, f"other/{key}")
        out[tag] = float(value)
    return out


def _writer_class(required: bool) -> Any:
    """torch's SummaryWriter, or None (an error when required) without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if required:
            raise UsageError(
                f"--tensorboard needs the tensorboard package; install it with {INSTALL} "
                "(or pass --no-tensorboard)"
            ) from None
        return None
    return SummaryWriter


def check_tensorboard(setting: bool | None) -> None:
    """Fail before any work when event files are required and tensorboard is missing."""
    if setting:
        _writer_class(required=True)


class EventLog:
    """Scalars per epoch under OUT/tensorboard/, continuing a resumed run's curves.

    The event file is opened with the first epoch to log, so a run that fails before
    finishing an epoch leaves no tensorboard/ folder behind.
    """

    def __init__(self, writer_class: Any, out: Path, history: list[dict[str, Any]]) -> None:
        self.folder = Path(out) / TENSORBOARD_DIR
        self.writer_class = writer_class
        self.writer: Any = None
        # resumed without event files so far (tensorboard was off or missing): log the
        # epochs already done first, so the curves start at epoch 1
        self.backlog = [] if any(self.folder.glob(EVENTS_GLOB)) else list(history)
        self.next_epoch = len(history) + 1

    def epoch(self, record: dict[str, Any]) -> None:
        """Log one finished epoch and flush, so a live TensorBoard shows it at once."""
        if self.writer is None:
            # purge_step: readers drop what an earlier process logged from this epoch on
            # (a run killed after its last saved state), so a resumed curve repeats no step
            self.writer = self.writer_class(log_dir=str(self.folder), purge_step=self.next_epoch)
        for r in [*self.backlog, record]:
            for tag, value in tag_values(r).items():
                self.writer.add_scalar(tag, value, global_step=int(r["epoch"]))
        self.backlog = []
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file, if one was opened."""
        if self.writer is not None:
            self.writer.close()


def open_event_log(
    setting: bool | None, out: Path, history: list[dict[str, Any]]
) -> EventLog | None:
    """The run's event log, or None when off (or left at its default without tensorboard)."""
    if setting is False:
        return None
    writer_class = _writer_class(required=bool(setting))
    return None if writer_class is None else EventLog(writer_class, out, history)
