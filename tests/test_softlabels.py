"""Soft-label diversity statistics against hand-worked answers."""

from __future__ import annotations

import json
import math

import pytest
import torch

from icckd_cli.base.errors import IcckdError
from icckd_cli.metrics.softlabels import (
    SoftLabelAccumulator,
    effective_rank_from_gram,
    mean_pairwise_distance,
    pca_2d,
)

T = 4.0


def logits_for(p: list[list[float]]) -> torch.Tensor:
    """Logits (B, C) whose softmax at temperature T is exactly p."""
    return torch.tensor(p, dtype=torch.float64).log() * T


def run(p: list[list[float]], labels: list[int], features: torch.Tensor | None = None):
    c = len(p[0])
    h = torch.zeros(len(p), 1) if features is None else features
    acc = SoftLabelAccumulator(c, h.shape[1], temperature=T)
    acc.update(logits_for(p), h, torch.tensor(labels))
    return acc.compute()


def test_identical_soft_labels_have_zero_spread_and_rank_one() -> None:
    p = [[0.7, 0.2, 0.1]] * 4 + [[0.1, 0.6, 0.3]] * 3
    stats = run(p, [0] * 4 + [1] * 3)
    for row in stats.per_class[:2]:
        assert row["intra_distance"] == pytest.approx(0.0, abs=1e-7)
        assert row["intra_distance_nontarget"] == pytest.approx(0.0, abs=1e-7)
        assert row["effective_rank"] == pytest.approx(1.0, abs=1e-9)
    assert stats.overall["effective_rank"] == pytest.approx(1.0, abs=1e-9)
    assert stats.overall["ratio"] == pytest.approx(0.0, abs=1e-6)


def test_permuted_classes_inter_distance_by_hand() -> None:
    a, b = 0.8, 0.2
    stats = run([[a, b], [a, b], [b, a]], [0, 0, 1])
    assert stats.overall["inter_distance"] == pytest.approx(math.sqrt(2) * abs(a - b))
    assert stats.per_class[0]["target_prob"] == pytest.approx(a)
    assert stats.per_class[1]["nontarget_mass"] == pytest.approx(b)
    assert stats.overall["target_prob"] == pytest.approx(a)
    assert stats.overall["accuracy"] == pytest.approx(100.0)


def test_three_sample_class_mean_pairwise_distance_by_hand() -> None:
    p = [[0.5, 0.25, 0.25], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]]
    stats = run(p, [0, 0, 0])
    rows = torch.tensor(p, dtype=torch.float64)
    d01 = math.sqrt(0.25**2 + 0.25**2)
    d02 = math.sqrt((1 / 6) ** 2 + 2 * (1 / 12) ** 2)
    d12 = math.sqrt((1 / 6) ** 2 + (1 / 6) ** 2 + (1 / 3) ** 2)
    assert torch.dist(rows[0], rows[1]).item() == pytest.approx(d01)
    assert stats.per_class[0]["intra_distance"] == pytest.approx((d01 + d02 + d12) / 3, rel=1e-6)
    # q drops class 0: (0.5, 0.5), (1, 0), (0.5, 0.5) -> distances s, 0, s with s = sqrt(0.5).
    s = math.sqrt(0.5)
    assert stats.per_class[0]["intra_distance_nontarget"] == pytest.approx(2 * s / 3, rel=1e-6)
    assert math.isnan(stats.overall["inter_distance"])


def test_entropies_uniform_and_nontarget_renormalised() -> None:
    c = 5
    stats = run([[1 / c] * c], [2])
    assert stats.per_class[2]["entropy"] == pytest.approx(math.log(c))
    assert stats.per_class[2]["entropy_nontarget"] == pytest.approx(math.log(c - 1))
    # p = (0.6, 0.3, 0.1), target 0: q = (0.75, 0.25).
    stats = run([[0.6, 0.3, 0.1]], [0])
    h = -(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1))
    hq = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert stats.overall["entropy"] == pytest.approx(h)
    assert stats.overall["entropy_nontarget"] == pytest.approx(hq)
    assert stats.per_class[0]["intra_distance"] == 0.0  # one sample, no pairs


def test_nc1_zero_when_features_sit_at_class_means() -> None:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 4, generator=g)
    labels = [0, 0, 1, 1, 1, 2, 2]
    stats = run([[0.5, 0.3, 0.2]] * 7, labels, features=means[labels] + 100.0)
    assert stats.overall["nc1"] == pytest.approx(0.0, abs=1e-9)
    assert stats.overall["feature_intra_distance"] == pytest.approx(0.0, abs=1e-9)


def test_nc1_two_classes_one_dimension_by_hand() -> None:
    # mu = 1, 5; global 3; S_W = 1; S_B = (4 + 4) / 2 = 4; NC1 = (1 / 4) / 2.
    feats = torch.tensor([[0.0], [2.0], [4.0], [6.0]])
    stats = run([[0.6, 0.4]] * 2 + [[0.4, 0.6]] * 2, [0, 0, 1, 1], features=feats)
    assert stats.overall["nc1"] == pytest.approx(0.125)
    assert stats.overall["feature_intra_distance"] == pytest.approx(2.0)
    assert stats.overall["feature_inter_distance"] == pytest.approx(4.0)
    assert stats.overall["feature_ratio"] == pytest.approx(0.5)


def test_streaming_in_batches_equals_one_batch() -> None:
    g = torch.Generator().manual_seed(1)
    logits, feats = torch.randn(60, 6, generator=g) * 3, torch.randn(60, 5, generator=g)
    labels = torch.randint(0, 5, (60,), generator=g)  # class 5 stays empty
    whole, parts = SoftLabelAccumulator(6, 5), SoftLabelAccumulator(6, 5)
    whole.update(logits, feats, labels)
    for i in range(0, 60, 7):
        parts.update(logits[i : i + 7], feats[i : i + 7], labels[i : i + 7])
    a, b = whole.compute(), parts.compute()
    assert a.per_class[5]["count"] == 0 and a.to_dict()["per_class"][5]["entropy"] is None
    assert json.loads(json.dumps(a.to_dict()))["overall"].keys() == a.overall.keys()
    rows = [(a.overall, b.overall), *zip(a.per_class, b.per_class, strict=True)]
    for x, y in rows:
        assert x.keys() == y.keys()
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-9, nan_ok=True), k


def test_effective_rank_matches_direct_svd() -> None:
    g = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(40, 8, generator=g), torch.zeros(40, dtype=torch.long)
    acc = SoftLabelAccumulator(8, 1)
    acc.update(logits, torch.zeros(40, 1), labels)
    s = torch.linalg.svdvals((logits.double() / 4).softmax(1))
    s = s / s.sum()
    assert acc.compute().per_class[0]["effective_rank"] == pytest.approx(
        math.exp(-(s * s.log()).sum().item()), rel=1e-6
    )
    assert effective_rank_from_gram(torch.eye(3)) == pytest.approx(3.0)


@pytest.mark.parametrize("n,chunk", [(1, 4), (2, 1), (23, 4), (30, 7), (16, 16)])
def test_chunked_pairwise_mean_equals_double_loop(n: int, chunk: int) -> None:
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(n))
    pairs = [torch.dist(x[i], x[j]).item() for i in range(n) for j in range(i + 1, n)]
    expected = sum(pairs) / len(pairs) if pairs else 0.0
    assert mean_pairwise_distance(x, chunk=chunk) == pytest.approx(expected, rel=1e-6)


def test_fewer_than_two_classes_gives_nan_not_a_crash() -> None:
    stats = run([[0.7, 0.3], [0.6, 0.4]], [0, 0])
    for key in ("inter_distance", "ratio", "feature_ratio", "nc1"):
        assert math.isnan(stats.overall[key]), key
    assert stats.overall["classes"] == 1
    empty = SoftLabelAccumulator(3, 2).compute()
    assert math.isnan(empty.overall["accuracy"]) and math.isnan(empty.overall["ratio"])
    assert empty.to_dict()["overall"]["ratio"] is None


def test_examples_and_pca() -> None:
    acc = SoftLabelAccumulator(4, 2, max_examples=3)
    acc.update(torch.randn(10, 4), torch.randn(10, 2), torch.tensor([0] * 6 + [1] * 4))
    stats = acc.compute()
    assert sorted(stats.examples) == [0, 1] and stats.examples[0].shape == (3, 4)
    pts = torch.randn(20, 4, generator=torch.Generator().manual_seed(3))
    proj = pca_2d(pts)
    assert proj.shape == (20, 2)
    # The first component carries the most variance and the projection is centred.
    assert proj[:, 0].var() >= proj[:, 1].var()
    assert proj.mean(0).abs().max() < 1e-9
    assert pca_2d(pts[:1]).abs().sum() == 0


def test_bad_labels_name_the_fix() -> None:
    acc = SoftLabelAccumulator(3, 2)
    with pytest.raises(IcckdError, match="3 classes"):
        acc.update(torch.randn(2, 3), torch.randn(2, 2), torch.tensor([0, 3]))
    with pytest.raises(ValueError):
        acc.update(torch.randn(2, 4), torch.randn(2, 2), torch.tensor([0, 1]))
