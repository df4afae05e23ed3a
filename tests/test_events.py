"""The progress events: one list (base/events.Event) that every emitter and view keeps to."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from icckd_cli.base.events import Event
from icckd_cli.presentation.experiment_progress import ExperimentProgress
from icckd_cli.presentation.progress import DownloadProgress, TrainingProgress, View

ROOT = Path(__file__).resolve().parents[1] / "icckd_cli"
# the names the package gives the callback it reports progress to
EMITTERS = {"callback", "progress", "notify", "shown", "on_event", "emit"}


def emitted() -> dict[str, set[str]]:
    """{event name: files} of every `callback("name", ...)` call in the package."""
    found: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in EMITTERS and isinstance(first, ast.Constant):
                assert isinstance(first.value, str), f"{path}: event {first.value!r} not a name"
                found.setdefault(first.value, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_emitted_event_is_listed_and_every_listed_one_is_emitted() -> None:
    found = emitted()
    # the scan sees the emitters of every layer that reports progress
    files = set().union(*found.values())
    for expected in ("training/engine.py", "training/store/writer.py", "data/decode.py",
                     "base/download.py", "commands/runs.py",
                     "commands/experiment/matrix.py"):  # fmt: skip
        assert expected in files, f"no event found in {expected}: is EMITTERS still right?"
    unknown = {name: where for name, where in found.items() if name not in set(Event)}
    assert unknown == {}, "add these events to icckd_cli/base/events.py"
    assert {e.value for e in Event} == set(found), "an Event nobody emits: remove it"


def test_a_member_is_its_string() -> None:
    assert Event.STEP == "step" and str(Event.TEACHER_CACHE) == "teacher_cache"
    assert {Event.RUN_END: 1}["run_end"] == 1  # a view's table answers the plain string
    assert len({e.value for e in Event}) == len(Event)


VIEWS = [
    lambda: TrainingProgress("teacher resnet8"),
    lambda: DownloadProgress(),
    lambda: ExperimentProgress("exp"),
]


@pytest.mark.parametrize("make", VIEWS, ids=["training", "download", "experiment"])
def test_each_view_handles_or_ignores_each_event(make: object) -> None:
    view = make()  # type: ignore[operator]
    assert isinstance(view, View)
    handled = set(view.handlers())
    assert handled & view.IGNORED == set(), "an event both handled and ignored"
    assert handled | view.IGNORED == set(Event), (
        f"{type(view).__name__} neither handles nor ignores "
        f"{sorted(e.value for e in set(Event) - handled - view.IGNORED)}"
    )


@pytest.mark.parametrize("make", VIEWS, ids=["training", "download", "experiment"])
def test_ignored_and_unknown_events_print_nothing(
    make: object, capsys: pytest.CaptureFixture[str]
) -> None:
    view = make()  # type: ignore[operator]
    for event in [*view.IGNORED, "no_such_event"]:
        view(event, {})  # an empty info: a handler that ran would fail on it
    view.close()
    assert capsys.readouterr() == ("", "")


def test_string_and_member_dispatch_alike(capsys: pytest.CaptureFixture[str]) -> None:
    record = {"epoch": 1, "train_loss": 2.0, "train_ce": 2.0, "top1": 50.0, "lr": 0.05,
              "images_per_s": 1234.0}  # fmt: skip
    view = TrainingProgress("teacher resnet8")
    view("start", {"epochs": 2, "steps": 3, "epoch": 0})
    view("epoch", record)
    view(Event.EPOCH, record)
    view("end", {"best": {}})
    view.close()
    lines = capsys.readouterr().err.splitlines()
    line = "epoch   1/2  loss 2  ce 2  top1 50.00  lr 0.05  1234 img/s"
    assert lines == [line, line]


def test_the_experiment_view_shows_nothing_before_its_plan(
    capsys: pytest.CaptureFixture[str],
) -> None:
    view = ExperimentProgress("exp")
    view("run", {"index": 1, "total": 2, "label": "teachers/ce/seed0", "action": "train"})
    assert capsys.readouterr().err == ""
    view("plan", {"total": 2, "done": 0})
    view("run", {"index": 1, "total": 2, "label": "teachers/ce/seed0", "action": "skip"})
    view("warning", {"message": "careful"})
    view.close()
    assert capsys.readouterr().err.splitlines() == [
        "run 1/2: teachers/ce/seed0: finished already, skipped",
        "warning: careful",
    ]
