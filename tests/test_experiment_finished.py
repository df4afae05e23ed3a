"""Each finished run of an experiment read once: its checkpoint header, and each teacher's hash."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from icckd_cli.base import checkpoint
from icckd_cli.commands.experiment import finished
from icckd_cli.commands.experiment.config import load_experiment
from icckd_cli.commands.experiment.matrix import run_experiment
from tests.helpers import tiny_experiment

# one seed of the tiny experiment on 5 digits a class, no latency: 5 runs of one epoch
SMALL = (
    ("seeds = [0, 1]", "seeds = [0]"),
    ("train_per_class = 20\ntest_per_class = 5", "train_per_class = 5\ntest_per_class = 3"),
    ('device = "cpu"', 'device = "cpu"\nlatency = false'),
)
MODELS = [
    "teachers/ce/seed0",
    "teachers/icc/seed0",
    "students/ce/kd/seed0",
    "students/icc/kd/seed0",
    "baseline/seed0",
]


def _count(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, root: Path) -> Counter[str]:
    """Calls of module.name by the run folder (under root) of the file it was given."""
    seen: Counter[str] = Counter()
    real = getattr(module, name)

    def counted(path: Path, *args: Any, **kwargs: Any) -> Any:
        folder = Path(path).parent
        seen[str(folder.relative_to(root) if folder.is_relative_to(root) else folder)] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return seen


@pytest.mark.slow
def test_each_finished_run_is_read_once_and_each_teacher_hashed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_experiment(tmp_path, *SMALL))
    out = tmp_path / "exp"
    with monkeypatch.context() as m:
        headers = _count(m, finished, "read_header", out)
        first = run_experiment(load_experiment(config), lambda event, info: None)
    assert first is not None
    # trained now: each header read once, when the results are assembled (costs, top-1,
    # transfer and per-class numbers all from that one read)
    assert headers == Counter(dict.fromkeys(MODELS, 1))

    # everything finished: the students' teacher check reads their headers and hashes each
    # teacher, and the results reuse both; no header is opened another way (every reader of
    # a checkpoint's header opens it through read_header in base/checkpoint.py)
    headers = _count(monkeypatch, finished, "read_header", out)
    opened = _count(monkeypatch, checkpoint, "read_header", out)
    hashes = _count(monkeypatch, finished, "weights_sha256", out)
    again = run_experiment(load_experiment(config), lambda event, info: None)
    assert headers == Counter(dict.fromkeys(MODELS, 1))
    assert opened == headers
    assert hashes == Counter({"teachers/ce/seed0": 1, "teachers/icc/seed0": 1})
    assert again is not None and again.to_json() == first.to_json()


def test_a_run_result_reads_top1_and_the_recorded_teacher_from_its_header() -> None:
    meta = {
        "metrics": {"final": {"top1": 81.5}, "best": {"top1": 83.0}},
        "dataset": {"num_classes": 10, "train_counts": [5] * 10},
        "teacher": {"sha256": "ab" * 32},
    }
    result = finished.RunResult(Path("model.safetensors"), meta)
    assert (result.top1(), result.top1("best")) == (81.5, 83.0)
    assert result.dataset["train_counts"] == [5] * 10
    assert result.teacher_sha256 == "ab" * 32
    bare = finished.RunResult(Path("model.safetensors"), {})
    assert (bare.top1(), bare.top1("best"), bare.teacher_sha256, bare.dataset) == (
        None,
        None,
        None,
        {},
    )
