"""Mixup's images and its cross-entropy on labelled targets, against float64 references."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from icckd_cli.data import Batch, DataSpec, DeviceLoader
from icckd_cli.data.mixup import MixupLoader, mix_draw, mix_views
from icckd_cli.data.registry import Split
from icckd_cli.training.labelled import labelled_ce


def _reference_ce(logits: torch.Tensor, labels: list[int], lam: float, perm: list[int]) -> float:
    """sum_i sum_(w, y) w [y >= 0] CE(z_i, y) / sum of those w, written out in float64."""
    z = logits.double()
    num = den = 0.0
    for i in range(len(labels)):
        log_p = z[i] - math.log(float(torch.exp(z[i]).sum()))
        for w, y in ((lam, labels[i]), (1 - lam, labels[perm[i]])):
            if y >= 0:
                num += w * -float(log_p[y])
                den += w
    return num / den if den else 0.0


def _out(logits: torch.Tensor, labels: list[int], mix: Any) -> dict[str, Any]:
    y = torch.tensor(labels)
    batch = Batch([torch.zeros(len(labels), 3, 2, 2)], y, torch.arange(len(labels)), mix=mix)
    return {"logits": logits, "known": y, "batch": batch}


@pytest.mark.parametrize("labels", [[2, -1, 0, 1, -1], [2, 3, 0, 1, 1], [-1, -1, -1, 0, -1]])
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.91])
def test_labelled_ce_matches_a_float64_reference_of_the_mixed_targets(
    labels: list[int], lam: float
) -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 4, dtype=torch.float64) * 3
    perm = [3, 0, 4, 1, 2]
    got = labelled_ce(_out(logits, labels, (lam, torch.tensor(perm))), {})
    assert float(got) == pytest.approx(_reference_ce(logits, labels, lam, perm), rel=1e-12)


def test_labelled_ce_is_mixups_ce_when_all_are_labelled_and_the_mean_when_unmixed() -> None:
    torch.manual_seed(1)
    logits = torch.randn(6, 5, dtype=torch.float64)
    y = torch.tensor([0, 4, 2, 2, 1, 3])
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    lam = 0.37
    want = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
    got = labelled_ce(_out(logits, y.tolist(), (lam, perm)), {})
    assert float(got) == pytest.approx(float(want), rel=1e-12)
    hidden = y.clone()
    hidden[[1, 4]] = -1  # unmixed: the mean CE over the 4 labelled images
    keep = hidden >= 0
    got = labelled_ce(_out(logits, hidden.tolist(), None), {})
    assert float(got) == pytest.approx(float(F.cross_entropy(logits[keep], y[keep])), rel=1e-12)


def test_a_batch_without_labelled_targets_adds_zero_and_no_gradient_nan() -> None:
    logits = torch.randn(3, 4, requires_grad=True)
    loss = labelled_ce(_out(logits, [-1, -1, -1], (0.5, torch.tensor([2, 0, 1]))), {})
    loss.backward()
    assert float(loss.detach()) == 0.0 and logits.grad is not None
    assert torch.equal(logits.grad, torch.zeros(3, 4))


def test_mixed_views_match_a_float64_reference() -> None:
    torch.manual_seed(2)
    x = torch.randn(8, 3, 5, 5)
    lam, perm = mix_draw(0.4, 8, seed=3, epoch=1, step=2)
    assert sorted(perm.tolist()) == list(range(8)) and 0 < lam < 1
    (got,) = mix_views([x], lam, perm)
    want = lam * x.double() + (1 - lam) * x.double()[perm]
    assert torch.allclose(got.double(), want, rtol=0, atol=1e-6)
    # the draw is numpy's Beta(0.4, 0.4) under the (salt, seed, epoch, step) seed, and fixed
    rng = np.random.default_rng([20180225, 3, 1, 2])
    assert lam == rng.beta(0.4, 0.4)
    assert mix_draw(0.4, 8, 3, 1, 2)[0] == lam and mix_draw(0.4, 8, 3, 1, 3)[0] != lam


def test_beta_draws_have_the_beta_mean_and_variance() -> None:
    alpha = 0.2
    lams = np.array([mix_draw(alpha, 2, 0, 0, step)[0] for step in range(4000)])
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)) = 0.1786 for a = 0.2
    assert abs(lams.mean() - 0.5) < 0.02
    assert abs(lams.var() - 1 / (4 * (2 * alpha + 1))) < 0.01


def test_the_mixup_loader_mixes_each_batch_and_replays_from_any_step() -> None:
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    spec = DataSpec("t", 2, ["a", "b"], [0.5] * 3, [0.25] * 3, 8, True)
    plain = DeviceLoader(Split(images, torch.arange(40) % 2, torch.arange(40)), spec, 16)
    loader = MixupLoader(plain, 1.0, seed=5)
    assert len(loader) == len(plain) == 3 and loader.world == 1
    batches = list(loader.epoch(1))
    for raw, batch in zip(plain.epoch(1), batches, strict=True):
        assert batch.mix is not None
        lam, perm = batch.mix
        want_lam, want_perm = mix_draw(1.0, len(raw.labels), 5, 1, raw.step)
        assert lam == want_lam and torch.equal(perm, want_perm)
        want = lam * raw.views[0].double() + (1 - lam) * raw.views[0].double()[perm]
        assert torch.allclose(batch.views[0].double(), want, rtol=0, atol=1e-6)
        assert torch.equal(batch.labels, raw.labels)  # labels stay; CE reads the pairs
    resumed = list(loader.epoch(1, start_step=2))
    assert torch.equal(resumed[0].views[0], batches[2].views[0])
