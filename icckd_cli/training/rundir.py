"""Run folders: the files a run writes, refusing to clobber one, failed writes, Ctrl-C.

A run folder holds config.json from the start, state.safetensors while the run can be
resumed, metrics.jsonl after each epoch (and tensorboard/ event files, when on) and
model.safetensors once it has finished.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from icckd_cli.base.atomic import write_text_atomic
from icckd_cli.base.checkpoint import Checkpoint, read_metadata
from icckd_cli.base.errors import IcckdError, UsageError

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
TENSORBOARD_DIR = "tensorboard"
EVENTS_GLOB = "events.out.tfevents.*"


def check_resumable(out: Path) -> None:
    """--resume needs an interrupted run: a state file and no finished model."""
    if (out / MODEL_FILE).exists():
        raise UsageError(f"{out} holds a finished run; there is nothing to resume")
    if not (out / STATE_FILE).exists():
        raise UsageError(
            f"{out} holds no {STATE_FILE} to resume from; start the run without --resume"
        )
    # its tensors checked against their digest before the folder is touched: damage is refused
    # while nothing has been written (restore_state reads it again, after the rebuild)
    Checkpoint.read(out / STATE_FILE)


def prepare_out_dir(out: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber a finished or interrupted run; check the folder can be written.

    Nothing is created here, so a run stopped by a later check leaves no trace.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; choose another --out")
    if not overwrite and not resume:
        if (out / MODEL_FILE).exists():
            raise UsageError(
                f"{out} already holds a finished run ({MODEL_FILE}); pass --overwrite to "
                "replace it or choose another --out"
            )
        if (out / STATE_FILE).exists():
            raise UsageError(
                f"{out} holds an interrupted run ({STATE_FILE}); continue it with --resume "
                f"{out}, or pass --overwrite to start afresh"
            )
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(
            f"cannot create --out {out}: {parent} is a file, not a folder; choose another --out"
        )
    if out.is_dir():
        try:  # root ignores permission bits, so only a real write tells
            probe = out / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise IcckdError(
                f"cannot write to output folder {out} ({exc.strerror}); choose a writable --out"
            ) from None
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise IcckdError(
            f"cannot create output folder {out}: {parent} is not writable; choose a writable --out"
        )


def start_run_dir(out: Path, config: dict[str, Any], overwrite: bool, resume: bool) -> None:
    """Create the run folder and write config.json; --overwrite first clears the old run."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite and not resume:
            # only now, after every check passed: a typo must not cost the old run
            for name in (MODEL_FILE, STATE_FILE, METRICS_FILE):
                (out / name).unlink(missing_ok=True)
        if not resume:  # curves of an old or aborted run must not mix with the new one's
            for events in (out / TENSORBOARD_DIR).glob(EVENTS_GLOB):
                events.unlink()
        write_text_atomic(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    except OSError as exc:
        raise IcckdError(
            f"cannot write to output folder {out} ({exc.strerror or exc}); choose a writable --out"
        ) from None


@contextmanager
def writing(out: Path, what: str) -> Iterator[None]:
    """A failed write (disk full, permissions) as one line that says what is kept."""
    try:
        yield
    except OSError as exc:
        kept = (
            f"; the last good state stays in {out / STATE_FILE}: continue with --resume {out}"
            if (out / STATE_FILE).exists()
            else ""
        )
        raise IcckdError(
            f"cannot write {out / what} ({exc.strerror or exc}); free space or fix the "
            f"folder's permissions{kept}"
        ) from None


def write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl: one JSON line per finished epoch, rewritten whole each time."""
    lines = "".join(json.dumps(r) + "\n" for r in history)
    with writing(out, METRICS_FILE):
        write_text_atomic(out / METRICS_FILE, lines)


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """A run folder's metrics.jsonl records; a partial last line (a live run) is skipped."""
    run = Path(run)
    if not run.is_dir():
        raise UsageError(f"run folder {run} does not exist; give the --out folder of a run")
    path = run / METRICS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(
            f"{run} holds no {METRICS_FILE}; give the --out folder of a train-teacher or "
            "distill run that finished at least one epoch"
        ) from None
    except OSError as exc:
        raise IcckdError(f"cannot read {path} ({exc.strerror or exc})") from None
    *complete, last = text.split("\n")  # `last` is "" unless a line is still being written
    records = []
    for i, line in enumerate(complete, 1):
        if not line.strip():
            continue
        record = _record(line)
        if record is None:
            raise IcckdError(
                f"{path} line {i} is not a JSON record; the file is damaged: fix or delete "
                "that line"
            )
        records.append(record)
    partial = _record(last)  # None while the run is still writing its last line
    return records if partial is None else [*records, partial]


def _record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def decay_epochs(run: Path) -> list[int]:
    """The epochs after which a run's learning rate drops, from its config.json."""
    try:
        config = json.loads((Path(run) / CONFIG_FILE).read_text())
        return [int(e) for e in config.get("lr_decay_epochs") or []]
    except (OSError, ValueError, TypeError, AttributeError):
        return []


def kept_state(out: Path) -> str:
    """What a run that stopped on NaN leaves behind, for its error message."""
    path = out / STATE_FILE
    try:
        extra = read_metadata(path).get("extra") or {}
    except IcckdError:
        return "; nothing was saved from this run (no resumable state had been written yet)"
    epoch, step = extra.get("epoch", 0), extra.get("step", 0)
    where = f"epoch {epoch + 1}, step {step}" if step else f"end of epoch {epoch}"
    return f"; nothing was saved after it: the last good state ({where}) stays in {path}"


def resume_hint(out: Path, kind: str) -> str:
    """How to continue a run stopped by an unreadable file, and from where, for its message."""
    try:
        extra = read_metadata(out / STATE_FILE).get("extra") or {}
    except IcckdError:
        return "; no resumable state had been written yet: start the run again"
    epoch, step = extra.get("epoch", 0), extra.get("step", 0)
    where = f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
    where = where if step or epoch else "the start"
    command = "train-teacher" if kind == "teacher" else "distill"
    return f", then continue with icckd {command} --resume {out} (state saved at {where})"


@contextmanager
def stop_on_signals() -> Iterator[list[bool]]:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step."""
    flag = [False]

    def handler(signum: int, frame: Any) -> None:
        flag[0] = True

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield flag
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
