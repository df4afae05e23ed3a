"""How far a reader follows `icckd distill --method dkd` from the command to DKD's loss.

docs/architecture.md lists the files; this test records, with a profiler, every project
file on the call stack whenever DKD's code runs (its settings resolved, its term built, its
loss computed) and holds the list to what the page says.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from tests.helpers import digits_teacher, icckd

PACKAGE = Path(__file__).resolve().parents[1] / "icckd_cli"
DKD_CODE = {"_resolve", "_build", "dkd_loss"}  # methods/dkd.py: what a distill run calls


def _stacks(run: Any) -> dict[str, set[str]]:
    """{DKD function: the project files on the stack whenever it was called} while `run()`."""
    seen: dict[str, set[str]] = {}

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        code = frame.f_code
        if event != "call" or code.co_name not in DKD_CODE:
            return
        if not code.co_filename.endswith("methods/dkd.py"):
            return
        here: FrameType | None = frame
        files = seen.setdefault(code.co_name, set())
        while here is not None:
            path = Path(here.f_code.co_filename).resolve()
            if path.is_relative_to(PACKAGE):
                files.add(path.relative_to(PACKAGE).as_posix())
            here = here.f_back

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return seen


def test_distill_dkd_reaches_its_loss_through_the_files_the_architecture_page_lists(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    teacher = tmp_path / "teacher.safetensors"
    digits_teacher(teacher)
    args = ["distill", "--teacher", teacher, "--arch", "resnet8", "--dataset", "digits",
            "--train-per-class", "3", "--test-per-class", "2", "--epochs", "1",
            "--method", "dkd", "--device", "cpu", "--out", tmp_path / "student"]  # fmt: skip
    seen = _stacks(lambda: icckd(capsys, *args))
    assert set(seen) == DKD_CODE  # each was reached
    stacks = set().union(*seen.values())
    # the eight a reader opens (the settings' type, settings/train.py, is built before the run
    # and so stands on no stack), plus the entry point and the torchrun decorator, which hand
    # the call on unchanged
    reader = {"cli/common.py", "cli/train.py", "commands/runs.py", "training/engine.py",
              "training/objectives.py", "methods/registry.py", "methods/dkd.py"}  # fmt: skip
    plumbing = {"cli/__init__.py", "training/distributed.py"}
    assert stacks == reader | plumbing
    architecture = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    listed = architecture.split("## From the command to a method's loss")[1].split("\n## ")[0]
    for name in sorted(reader | {"settings/train.py"}):
        assert f"`{name}`" in listed, name
