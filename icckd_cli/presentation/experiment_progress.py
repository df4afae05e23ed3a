"""The experiment's progress view: which run of the matrix, of how many, and that run's bar.

On a terminal the runs show as live bars; where stderr is not one (a log, a batch job) the
bars are off, so each epoch of a run is one plain line instead.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from icckd_cli.base.events import Event
from icckd_cli.presentation.console import err
from icckd_cli.presentation.lines import (
    best_phrase,
    epoch_line,
    recipe_line,
    teacher_cache_line,
)
from icckd_cli.presentation.progress import Handler, View, progress_bar


class ExperimentProgress(View):
    """The matrix's progress view: which run of how many, and that run's progress bar."""

    # a run's own end and decoding show in its bar and lines; the results come as tables
    IGNORED = frozenset({Event.END, Event.DECODE, Event.DOWNLOAD, Event.FINISH,
                         Event.CORRUPTION, Event.TRIAL_START, Event.TRIAL, Event.TIMEOUT,
                         Event.LATENCY, Event.TRAIN_SPLIT})  # fmt: skip

    def __init__(self, name: str) -> None:
        self.name = name
        self.matrix: Any = None
        self.run: Any = None
        self.cache_pass: Any = None
        self.label = ""
        self.epochs = 0
        super().__init__()

    def handlers(self) -> dict[Event, Handler]:
        shown = {  # these need the matrix's bar: nothing shows before the plan
            Event.RUN: self._run,
            Event.RECIPE: lambda info: self._print(f"  {recipe_line(info)}"),
            Event.START: self._start,
            Event.STEP: self._step,
            Event.EPOCH: self._epoch,
            Event.RUN_END: self._run_end,
            Event.DIVERSITY: lambda info: self._print(
                f"soft-label diversity of {info['count']} teacher checkpoint(s)"
            ),
            Event.COST: self._cost,
            Event.TEACHER_CACHE: lambda info: self._print(
                f"{self.label}: {teacher_cache_line(info)}"
            ),
            Event.TEACHER_CACHE_PASS: self._cache_pass,
            Event.JOBS: self._jobs,
        }
        return {
            Event.PLAN: self._plan,
            Event.WARNING: self._warning,
            **{event: self._once_planned(handler) for event, handler in shown.items()},
        }

    def _once_planned(self, handler: Handler) -> Handler:
        def run(info: dict[str, Any]) -> None:
            if self.progress is not None:
                handler(info)

        return run

    def _print(self, line: str) -> None:
        self.console().print(escape(line), highlight=False, soft_wrap=True)

    def _plan(self, info: dict[str, Any]) -> None:
        self.progress = progress_bar("{task.description}", "{task.fields[unit]}")
        self.progress.start()
        self.matrix = self.progress.add_task(
            f"[bold]{escape(self.name)}", total=info["total"], completed=info["done"], unit="runs"
        )

    def _run(self, info: dict[str, Any]) -> None:
        self.label = f"run {info['index']}/{info['total']}: {info['label']}"
        if info["action"] == "skip":
            self._print(f"{self.label}: finished already, skipped")
            return
        verb = "resuming" if info["action"] == "resume" else "training"
        self._print(f"{self.label}: {verb}")

    def _start(self, info: dict[str, Any]) -> None:
        assert self.progress is not None
        self.epochs = info["epochs"]
        total = info["epochs"] * info["steps"]
        self.run = self.progress.add_task(
            self.label, total=total, completed=info["epoch"] * info["steps"], unit="steps"
        )

    def _step(self, info: dict[str, Any]) -> None:
        if self.progress is not None and self.run is not None:
            self.progress.advance(self.run)

    def _epoch(self, info: dict[str, Any]) -> None:
        if self.progress is None or self.run is None:
            return
        if not err.is_terminal:  # no bar in a log: one plain line per epoch says it is alive
            self._print(f"{self.label}: {epoch_line(info, self.epochs)}")
            return
        desc = f"{self.label}  epoch {info['epoch']}/{self.epochs}"
        if "top1" in info:
            desc += f" top-1 {info['top1']:.2f}"
        self.progress.update(self.run, description=desc)

    def _run_end(self, info: dict[str, Any]) -> None:
        assert self.progress is not None
        final, best = info["final"], info["best"]
        self._print(
            f"{self.label}: top-1 {final['top1']:.2f} ({best_phrase(best)}), "
            f"{info['elapsed']:.0f} s"
        )
        self.progress.advance(self.matrix)
        if self.run is not None:
            self.progress.remove_task(self.run)
            self.run = None

    def _jobs(self, info: dict[str, Any]) -> None:
        """Runs in workers or Slurm jobs: the matrix's bar counts the finished ones."""
        assert self.progress is not None
        counts = ", ".join(f"{info[k]} {k}" for k in ("done", "running", "queued", "failed"))
        name = f"[bold]{escape(self.name)}[/bold] {counts}"
        self.progress.update(self.matrix, completed=info["done"], description=name)

    def _cost(self, info: dict[str, Any]) -> None:
        timed = " and batch-1 latency" if info["latency"] else ""
        self._print(f"parameters, MACs{timed} of {info['count']} architecture(s)")

    def _cache_pass(self, info: dict[str, Any]) -> None:
        """The teacher's one pass before the student trains: a bar of its own."""
        assert self.progress is not None
        if self.cache_pass is None:
            self.cache_pass = self.progress.add_task(
                f"{self.label}: teacher cache", total=info["total"], unit="batches"
            )
        self.progress.update(self.cache_pass, completed=info["done"])
        if info["done"] >= info["total"]:
            self.progress.remove_task(self.cache_pass)
            self.cache_pass = None
