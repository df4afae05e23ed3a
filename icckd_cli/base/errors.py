"""The one exception type for errors a user can cause; the CLI turns it into one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

USAGE = 2
RUNTIME = 1
INTERRUPTED = 130  # a run stopped by Ctrl-C (SIGINT) or SIGTERM, as shells count 128 + 2


class IcckdError(Exception):
    """A user-facing error: the message names the problem and the fix."""

    def __init__(self, message: str, exit_code: int = RUNTIME) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(IcckdError):
    """Bad options or values: exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, USAGE)


class DataFileError(IcckdError):
    """An image file met in the middle of a streamed epoch cannot be read: exit code 1."""


class Interrupted(Exception):
    """Raised out of the training loop after a checkpoint was written on SIGINT/SIGTERM."""


class Diverged(IcckdError):
    """A loss part (or the weights) became NaN or infinite; `part` names which."""

    def __init__(self, message: str, part: str = "loss", epoch: int = 0, step: int = 0) -> None:
        super().__init__(message)
        self.part, self.epoch, self.step = part, epoch, step


def suggest(name: str, choices: Iterable[str]) -> str:
    """' Did you mean: a, b?' for close matches (case-insensitive), else ''."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean: " + ", ".join(lowered[c] for c in close) + "?"


def first_line(exc: BaseException) -> str:
    """An exception's message cut to one line, for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class UnverifiedCheckpoint(UserWarning):
    """An icckd checkpoint written before digests: read, but its tensors cannot be checked."""
