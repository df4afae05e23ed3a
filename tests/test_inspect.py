"""Column names of `inspect-softlabels`: the shortest end of each path no other path ends with."""

from __future__ import annotations

from pathlib import Path

import pytest

from icckd_cli.commands.inspect import short_names


@pytest.mark.parametrize(
    ("paths", "names"),
    [
        (["runs/ce/model.safetensors", "runs/icc/model.safetensors"], ["ce", "icc"]),
        (["/r/exp/ce/seed0/model.safetensors", "/r/exp/icc/seed0/model.safetensors"],
         ["ce/seed0", "icc/seed0"]),
        (["/r/a/x.safetensors", "/r/b/x.safetensors", "/r/c/y.safetensors"], ["a/x", "b/x", "y"]),
        (["teacher.pth", "model.safetensors"], ["teacher", "model"]),
        # one path is the end of the other: the shorter has no end of its own, so it stays whole
        (["b/model.safetensors", "a/b/model.safetensors"], ["b/model.safetensors", "a/b"]),
        (["x.safetensors", "x.safetensors"], ["x.safetensors", "x.safetensors"]),
    ],
)  # fmt: skip
def test_short_names(paths: list[str], names: list[str]) -> None:
    assert short_names([Path(p) for p in paths]) == names
