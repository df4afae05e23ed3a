"""The Typer app: thin commands that build a config, call the engine, render.

Each command module registers on the one app when imported; the import order below is
the order `icckd --help` lists them in. Commands import commands/ (and with it torch) inside
their bodies, so that `icckd --help` and a bad option answer without importing torch.
"""

from __future__ import annotations

import sys
import warnings
from typing import TextIO

import typer

from icckd_cli.base.errors import INTERRUPTED, USAGE, IcckdError, UnverifiedCheckpoint
from icckd_cli.cli.common import _reports, app, show_error
from icckd_cli.presentation import console

# isort: off
from icckd_cli.cli import train  # noqa: F401  train-teacher, distill
from icckd_cli.cli import inspection  # noqa: F401  eval, inspect-softlabels, models
from icckd_cli.cli import experiment  # noqa: F401  experiment, quickstart
from icckd_cli.cli import fetch  # noqa: F401  fetch-teacher
from icckd_cli.cli import shipping  # noqa: F401  export
from icckd_cli.cli import tune  # noqa: F401  tune
# isort: on

__all__ = ["app", "main"]


_show_warning = warnings.showwarning


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A checkpoint read without a digest is one warning line; other warnings as Python shows."""
    if issubclass(category, UnverifiedCheckpoint):
        console.warning(str(message))
    else:
        _show_warning(message, category, filename, lineno, file, line)


def main() -> None:
    """Console entry point: one-line errors, documented exit codes, no tracebacks."""
    warnings.showwarning = _one_line_warning
    try:
        code = app(standalone_mode=False)
    except IcckdError as exc:
        sys.exit(show_error(exc))
    except KeyboardInterrupt:
        console.error("interrupted")
        sys.exit(INTERRUPTED)
    except Exception as exc:
        # click's (or Typer's vendored click's) usage errors: bad option, missing argument
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            if _reports(exc):
                console.error(f"{exc.format_message()} (see 'icckd --help')")
            sys.exit(USAGE)
        if isinstance(exc, typer.Abort):  # click's Abort, as Typer names it in every version
            console.error("aborted")
            sys.exit(INTERRUPTED)
        raise
    sys.exit(code if isinstance(code, int) else 0)
