"""The two consoles and the plain messages: one-line errors, notes, warnings, JSON on stdout."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

out = Console(soft_wrap=True)  # results: tables on stdout
err = Console(stderr=True)  # progress, notes, warnings and errors on stderr


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a table cell; NaN and None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def print_json(obj: Any) -> None:
    """One JSON object on stdout, nothing else."""
    # paths and other objects as their text; a float NaN is written as JSON's NaN, as always
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    """A one-line error on stderr."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """A one-line note on stderr."""
    err.print(escape(message), highlight=False, soft_wrap=True)


def warning(message: str, console: Console = err) -> None:
    """A one-line warning on stderr (the run goes on)."""
    console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
