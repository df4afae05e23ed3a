"""The progress views: callbacks that show a training run and a download on stderr.

Each view subscribes to the events of `icckd_cli.base.events.Event` it shows, in one table
{event: handler}, and names the ones it leaves alone in `IGNORED`; tests/test_events.py
checks that together they cover every event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from icckd_cli.base.events import Event
from icckd_cli.presentation.console import err, warning
from icckd_cli.presentation.lines import (
    epoch_line,
    recipe_line,
    teacher_cache_line,
    train_split_line,
)

Handler = Callable[[dict[str, Any]], None]


def progress_bar(first: str, unit: str) -> Progress:
    """A transient bar on stderr (off when stderr is not a terminal): label, bar, count, times."""
    return Progress(
        TextColumn(first),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} " + unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


class View:
    """A progress callback: the handler of each event it shows; the events in IGNORED it drops."""

    IGNORED: frozenset[Event] = frozenset()

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self._handlers = self.handlers()

    def handlers(self) -> dict[Event, Handler]:
        """{event: what the view does with its info}."""
        raise NotImplementedError

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        handler = self._handlers.get(event)  # type: ignore[call-overload]  # str == its Event
        if handler is not None:
            handler(info)

    def console(self) -> Console:
        """Where a line goes: above the live bars while they show, else plain stderr."""
        return self.progress.console if self.progress else err

    def _warning(self, info: dict[str, Any]) -> None:
        warning(info["message"], self.console())

    def close(self) -> None:
        """Stop the bars (also after an error or Ctrl-C)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class TrainingProgress(View):
    """A callback for the engine: a progress bar and one line per epoch, on stderr.

    The recipe line comes first: at once on a terminal; in a log, just before the first
    epoch line, so a run that fails in its first epoch writes its one error line alone.
    """

    # what an experiment, a download or the matrix reports is not a single run's
    IGNORED = frozenset({Event.DOWNLOAD, Event.PLAN, Event.RUN, Event.RUN_END,
                         Event.DIVERSITY, Event.COST, Event.FINISH, Event.CORRUPTION,
                         Event.TRIAL_START, Event.TRIAL, Event.TIMEOUT, Event.LATENCY,
                         Event.JOBS})  # fmt: skip

    def __init__(self, title: str, quiet: bool = False) -> None:
        self.title, self.quiet = title, quiet
        self.recipe: dict[str, Any] = {}  # for the JSON summary
        self.pending: str | None = None
        self.task: Any = None
        self.epochs = 0
        self.decode: Progress | None = None
        self.decode_task: Any = None
        super().__init__()

    def handlers(self) -> dict[Event, Handler]:
        return {
            Event.DECODE: self._decoding,
            Event.TEACHER_CACHE: lambda info: err.print(
                escape(teacher_cache_line(info)), highlight=False, soft_wrap=True
            ),
            Event.TEACHER_CACHE_PASS: lambda info: self._decoding(
                {"what": "teacher cache: running the teacher", **info}, "batches"
            ),
            Event.WARNING: self._warning,
            Event.TRAIN_SPLIT: lambda info: err.print(
                escape(train_split_line(info)), highlight=False, soft_wrap=True
            ),
            Event.RECIPE: self._recipe,
            Event.START: self._start,
            Event.STEP: self._step,
            Event.EPOCH: self._epoch,
            Event.END: lambda info: self.close_bar(),
        }

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if not self.quiet:
            super().__call__(event, info)

    def _recipe(self, info: dict[str, Any]) -> None:
        self.recipe, self.pending = info, recipe_line(info)
        if err.is_terminal:
            self._print_pending(err)

    def _start(self, info: dict[str, Any]) -> None:
        self.epochs = info["epochs"]
        total = info["epochs"] * info["steps"]
        self.progress = progress_bar(f"[bold]{escape(self.title)}", "steps")
        self.progress.start()
        self.task = self.progress.add_task(
            self.title, total=total, completed=info["epoch"] * info["steps"]
        )

    def _step(self, info: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def _epoch(self, info: dict[str, Any]) -> None:
        console = self.console()
        self._print_pending(console)
        console.print(epoch_line(info, self.epochs), highlight=False, soft_wrap=True)

    def _print_pending(self, console: Console) -> None:
        if self.pending is not None:
            console.print(escape(self.pending), highlight=False, soft_wrap=True)
            self.pending = None

    def _decoding(self, info: dict[str, Any], unit: str = "images") -> None:
        """A bar per decoding pass ('decoding 100,000 Tiny-ImageNet train JPEGs in 2 processes')."""
        if self.decode is None:
            self.decode = progress_bar(escape(info["what"]), unit)
            self.decode.start()
            self.decode_task = self.decode.add_task(info["what"], total=info["total"])
        self.decode.update(self.decode_task, completed=info["done"])
        if info["done"] >= info["total"]:
            self.decode.stop()
            self.decode = None

    def close_bar(self) -> None:
        """Stop the training bar at the end of the loop."""
        super().close()

    def close(self) -> None:
        """Stop the bars (also after an error)."""
        if self.decode is not None:
            self.decode.stop()
            self.decode = None
        super().close()


class DownloadProgress(View):
    """A callback for downloads: one transient bar of bytes on stderr."""

    IGNORED = frozenset(set(Event) - {Event.DOWNLOAD})  # nothing else happens in a download

    def __init__(self) -> None:
        self.task: Any = None
        super().__init__()

    def handlers(self) -> dict[Event, Handler]:
        return {Event.DOWNLOAD: self._download}

    def _download(self, info: dict[str, Any]) -> None:
        if self.progress is None:
            name = escape(str(info["url"]).rsplit("/", 1)[-1])
            self.progress = Progress(
                TextColumn(f"[bold]download[/] {name}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
                disable=not err.is_terminal,
            )
            self.progress.start()
            self.task = self.progress.add_task("download", total=info["total"])
        self.progress.update(self.task, completed=info["done"], total=info["total"])
