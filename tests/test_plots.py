"""The diversity figures are written as real PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from icckd_cli.errors import IcckdError
from icckd_cli.plots import write_figures
from icckd_cli.softlabels import SoftLabelAccumulator, SoftLabelStats

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["plane", "car", "bird", "cat"]


def stats(seed: int, temperature: float = 4.0, classes: int = 4) -> SoftLabelStats:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (40,), generator=g)
    acc = SoftLabelAccumulator(4, 3, temperature=temperature)
    acc.update(torch.randn(40, 4, generator=g) * 2, torch.randn(40, 3, generator=g), labels)
    return acc.compute()


def assert_pngs(paths: list[Path], out: Path) -> None:
    names = ["per_class_diversity.png", "ratio.png", "pca_softlabels.png"]
    assert [p.name for p in paths] == names
    for p in paths:
        assert p.parent == out
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, p.name


def test_three_figures_for_two_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "figs" / "nested"  # created on demand
    paths = write_figures([("ce", stats(0)), ("intra", stats(1))], out, NAMES, pca_classes=3)
    assert_pngs(paths, out)


def test_degenerate_inputs_still_render(tmp_path: Path) -> None:
    # One present class (NaN ratios) beside another temperature, default class names.
    results = [("one class", stats(2, classes=1)), ("t2", stats(3, temperature=2.0))]
    assert_pngs(write_figures(results, tmp_path), tmp_path)
    assert write_figures([], tmp_path / "none") == []


def test_class_names_must_match(tmp_path: Path) -> None:
    with pytest.raises(IcckdError, match="class names"):
        write_figures([("ce", stats(0))], tmp_path, NAMES[:2])
