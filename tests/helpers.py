"""Running the real CLI in-process, as a user's shell would, for tests."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from icckd_cli.cli import main

TINY = ["--dataset", "digits", "--train-per-class", "20", "--test-per-class", "5",
        "--batch-size", "16", "--device", "cpu"]  # fmt: skip


@dataclass
class Result:
    """Exit code and the captured streams of one CLI call."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as one JSON document."""
        return json.loads(self.out)


def icckd(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """Run `icckd ARGS...` in this process and capture what it prints."""
    capsys.readouterr()
    old = sys.argv
    sys.argv = ["icckd", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)
