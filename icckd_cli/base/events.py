"""The progress events the package reports through its callbacks, listed once.

Work and training never print: they call `callback(event, info)` with one of these names and
a dict of plain values, and presentation's views subscribe to the events they show. Emitters
may pass the plain strings ("step"): a member compares and hashes equal to its value.
tests/test_events.py checks that every event emitted anywhere is listed here and that each
view handles or deliberately ignores each one.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any


class Event(str, Enum):
    """One progress event; the comment names who emits it and what `info` holds."""

    # training/engine.py, once per run and per step
    START = "start"  # the loop starts: epochs, steps (per epoch), epoch (resumed after)
    STEP = "step"  # one optimiser step done: epoch, step, steps
    EPOCH = "epoch"  # an epoch ended: its metrics record (losses by name, top1, lr, ...)
    END = "end"  # the loop ended: best
    # commands/runs.py
    RECIPE = "recipe"  # the resolved recipe a run trains with: name, reason, optimiser, lr, ...
    # training/store.py, the teacher-output store
    TEACHER_CACHE = "teacher_cache"  # the store is written, resumed or read: action, path, bytes
    TEACHER_CACHE_PASS = "teacher_cache_pass"  # a batch of the teacher's pass stored: done, total
    # data/
    DECODE = "decode"  # images decoded so far in a decoding pass: what, done, total
    WARNING = "warning"  # something the user should know; the run goes on: message
    TRAIN_SPLIT = "train_split"  # a long-tailed training split: factor, largest, smallest, total
    # commands/robustness/scoring.py
    CORRUPTION = (
        "corruption"  # one corruption at one severity evaluated: corruption, severity, top1
    )
    # base/download.py
    DOWNLOAD = "download"  # bytes downloaded so far: url, done, total (None when unknown)
    # commands/experiment/
    PLAN = "plan"  # the matrix is about to run: total runs, done already
    RUN = "run"  # a run of the matrix starts or is skipped: index, total, label, kind, action
    RUN_END = "run_end"  # a run of the matrix finished: final, best, elapsed
    DIVERSITY = "diversity"  # soft-label statistics of the teachers are measured: count
    COST = "cost"  # parameters, MACs (and latency) are measured: count, latency
    # commands/cost.py
    LATENCY = "latency"  # a pass of a latency/throughput timing: batch, done, total (passes)
    FINISH = "finish"  # the whole matrix is done and its results written: out
    # commands/executor/driver.py, runs in worker processes or Slurm jobs
    JOBS = "jobs"  # the runs' states now: total, done, running, queued, failed

    # commands/tune/
    TRIAL_START = "trial_start"  # a trial of the study starts: number, params
    TRIAL = "trial"  # a trial of this worker ended: the frozen optuna trial, time
    TIMEOUT = "timeout"  # --timeout passed: no further trial starts in this worker: timeout

    def __str__(self) -> str:
        return self.value


Callback = Callable[[str, dict[str, Any]], None]
"""What the engine, the store, the loaders and the experiment report progress to."""
