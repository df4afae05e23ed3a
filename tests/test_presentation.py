"""Presentation's modules: JSON output, soft-label paths below the table."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from icckd_cli.presentation import (
    console,
    softlabel_tables,
    tables,
)


def test_json_is_one_document_with_paths_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    console.print_json({"top1": 71.5, "path": Path("a/b")})
    assert json.loads(capsys.readouterr().out) == {"top1": 71.5, "path": "a/b"}


def test_softlabel_paths_are_printed_once_below_the_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stats = SimpleNamespace(overall={"accuracy": 50.0, "ratio": 1.25})
    results = [
        SimpleNamespace(name=n, path=Path(f"/x/[{n}]/model.safetensors"), arch="resnet8",
                        objective={"terms": {"ce": 1.0, "icc": 0.1}}, stats=stats)
        for n in ("ce", "icc")
    ]  # fmt: skip
    softlabel_tables.softlabel_summary(results, 4.0, "test")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "soft-label diversity (test split, T = 4)"
    assert "ce + 0.1 icc" in next(line for line in out if "objective" in line)
    # rich markup in a path ([ce]) is printed as it is
    assert out[-2:] == ["  ce: /x/[ce]/model.safetensors", "  icc: /x/[icc]/model.safetensors"]


def test_table_notes_keep_their_square_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    spec = SimpleNamespace(
        title="cost",
        columns=["run"],
        rows=[["ce"]],
        notes=["latency not measured (latency = false in [experiment], or --no-latency)"],
    )
    tables.experiment_tables([spec])
    printed = capsys.readouterr().out
    assert "latency = false in [experiment], or --no-latency" in printed
