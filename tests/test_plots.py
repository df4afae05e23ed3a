"""The diversity figures are written as real PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from icckd_cli.base.errors import IcckdError
from icckd_cli.metrics.softlabels import SoftLabelAccumulator, SoftLabelStats
from icckd_cli.presentation.plots import write_figures
from icckd_cli.presentation.run_plots import Curve, learning_curves_figure, panel_grid

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


def test_learning_curves_draw_one_panel_per_metric_and_mark_the_decays() -> None:
    hist = [{"epoch": e, "top1": 10.0 * e, "nll": 1.0 / e} for e in (1, 2, 3)]
    curves = [
        Curve("ce seed 0", hist, [2, 10], group="ce"),
        Curve("ce seed 1", hist[:2], [2, 10], group="ce"),
        Curve("icc seed 0", [{**r, "gate": 0.5} for r in hist], [2, 10], group="icc"),
    ]
    fig = learning_curves_figure(curves, ["top1", "nll", "gate"], "title")
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["top1", "nll", "gate"]
    top1 = axes[0].get_lines()
    assert [list(line.get_xdata()) for line in top1[:3]] == [[1, 2, 3], [1, 2], [1, 2, 3]]
    assert list(top1[0].get_ydata()) == [10.0, 20.0, 30.0]
    # one group, one colour; its second member dashed
    assert top1[0].get_color() == top1[1].get_color() != top1[2].get_color()
    assert (top1[0].get_linestyle(), top1[1].get_linestyle()) == ("-", "--")
    # the drop after epoch 2 is marked between epochs 2 and 3; epoch 10 lies past the data
    assert [list(line.get_xdata()) for line in top1[3:]] == [[2.5, 2.5]]
    assert [len(line.get_xdata()) for line in axes[2].get_lines()[:3]] == [0, 0, 3]


def test_panels_run_three_to_a_row_and_four_as_a_square() -> None:
    grids = [panel_grid(n) for n in range(1, 8)]
    assert grids == [(1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (2, 3), (3, 3)]
