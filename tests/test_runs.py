"""The training entry points: the same seed gives the same run, and NaN stops it by name.

Interrupting, resuming and refusing are in test_state.py and test_rundir.py; the shared
`reference` run is built in conftest.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import TEACHER, args, assert_same_weights, history, icckd, ok, one_error

pytestmark = pytest.mark.slow

Capsys = pytest.CaptureFixture[str]


def test_same_seed_gives_identical_weights(capsys: Capsys, reference: Path, tmp_path: Path) -> None:
    ok(capsys, *args("train-teacher", TEACHER, out=tmp_path / "again"))
    assert_same_weights(reference, tmp_path / "again")
    assert history(reference) == history(tmp_path / "again")


def test_nan_stops_the_run_and_names_the_part(capsys: Capsys, tmp_path: Path) -> None:
    out = tmp_path / "nan"
    r = icckd(capsys, *args("train-teacher", TEACHER, lr=1e6, out=out))
    assert r.code == 1
    line = one_error(r.err)
    assert re.fullmatch(
        r"error: the loss part '(ce|icc)' became NaN or infinite at epoch 1, step \d+; try a "
        r"lower --lr \(it was 1e\+06\) or a lower --icc-weight; nothing was saved from this "
        r"run \(no resumable state had been written yet\)",
        line,
    ), line
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
