"""`icckd quickstart`: the built-in experiment is the example file, and runs into --out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from icckd_cli import experiment as ex
from tests.helpers import icckd

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_text_is_the_example_file() -> None:
    assert ex.QUICKSTART_TOML == (ROOT / "examples" / "quickstart.toml").read_text()
    exp = ex.quickstart_experiment()
    assert exp.options.dataset == "digits" and len(exp.options.seeds) >= 2
    assert [t.cross_entropy for t in exp.teachers] == [True, False]
    assert [s.config.method for s in exp.students] == ["kd"]


def test_cli_quickstart_runs_the_built_in_experiment_into_out(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[ex.Experiment] = []

    def fake_run(exp: ex.Experiment, callback: Any) -> dict[str, Any]:
        seen.append(exp)
        return ex.collect(exp, {})  # nothing trained: every cell is missing

    monkeypatch.setattr(ex, "run_experiment", fake_run)
    r = icckd(capsys, "quickstart", "--out", str(tmp_path / "qs"), "--device", "cpu")
    assert r.code == 0, r.err
    (exp,) = seen
    assert exp.options.out == tmp_path / "qs" and exp.options.device == "cpu"
    assert exp.command == "icckd quickstart" and len(exp.runs) == 10
    assert exp.runs[0].out == tmp_path / "qs/teachers/ce/seed0"
    assert "n/a (0/2 seeds)" in r.out and "0.00" not in r.out
