"""methods/dist.py: DIST (Huang et al. 2022) in float64 against a numpy reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from icckd_cli.methods.dist import dist_loss, dist_terms
from tests.helpers import digits_teacher, ok


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum()) * np.sqrt((b * b).sum()) + 1e-8))


def reference_dist(s: np.ndarray, t: np.ndarray, temp: float, beta: float, gamma: float) -> float:
    """T^2 (beta (1 - mean row Pearson) + gamma (1 - mean column Pearson)), numpy and loops."""

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z / temp - (z / temp).max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    ps, pt = softmax(s), softmax(t)
    inter = 1 - np.mean([_pearson(ps[i], pt[i]) for i in range(ps.shape[0])])
    intra = 1 - np.mean([_pearson(ps[:, j], pt[:, j]) for j in range(ps.shape[1])])
    return temp**2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0])
@pytest.mark.parametrize(("batch", "classes"), [(2, 3), (5, 10), (16, 100), (64, 7)])
@pytest.mark.parametrize(("beta", "gamma"), [(2.0, 2.0), (1.0, 0.5)])
def test_dist_matches_the_numpy_reference(
    temperature: float, batch: int, classes: int, beta: float, gamma: float
) -> None:
    rng = np.random.default_rng(batch * 100 + classes)
    s, t = rng.normal(size=(batch, classes)) * 3, rng.normal(size=(batch, classes)) * 3
    got = dist_loss(
        torch.from_numpy(s), torch.from_numpy(t), temperature=temperature, beta=beta, gamma=gamma
    )
    assert got.dtype == torch.float64 and got.shape == ()
    want = reference_dist(s, t, temperature, beta, gamma)
    assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_dist_by_hand() -> None:
    # identical predictions correlate perfectly: both relations are 0 up to the 1e-8 in the
    # denominator, |a|^2 / (|a|^2 + 1e-8), whose share grows as the centred vectors shrink
    z = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]], dtype=torch.float64)
    inter, intra = dist_terms(z, z.clone(), temperature=4.0)
    assert 0 <= inter.item() < 1e-5 and 0 <= intra.item() < 1e-5
    # two classes, two images: a row (p, 1 - p) centres to +-(p - 1/2), so a row correlation
    # is the sign of (p_s - 1/2)(p_t - 1/2); a column of two values centres to +-(d / 2), so
    # it correlates by the sign of the two sides' differences d. Every probability of class 0
    # is above 1/2 (rows agree, inter = 1 - 1 = 0); the student's class-0 column rises from
    # image 0 to image 1, the teacher's falls (each column -1, intra = 1 - (-1) = 2), so
    # loss = T^2 (beta * 0 + gamma * 2)
    s = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)  # p_0: 0.73, then 0.95
    t = torch.tensor([[3.0, 0.0], [1.0, 0.0]], dtype=torch.float64)  # p_0: 0.95, then 0.73
    inter, intra = dist_terms(s, t, temperature=1.0)
    assert inter.item() == pytest.approx(0.0, abs=1e-5)
    assert intra.item() == pytest.approx(2.0, abs=1e-5)
    loss = dist_loss(s, t, temperature=1.0, beta=3.0, gamma=0.5)
    assert loss.item() == pytest.approx(0.5 * 2.0, abs=1e-5)
    # T^2 scaling: at T = 2 the same orders hold, so the loss is 4 * gamma * 2
    assert dist_loss(s, t, temperature=2.0, beta=3.0, gamma=0.5).item() == pytest.approx(4.0, 1e-5)


def test_dist_reaches_the_student_only() -> None:
    g = torch.Generator().manual_seed(3)
    s = torch.randn(8, 10, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(8, 10, generator=g, dtype=torch.float64, requires_grad=True)
    dist_loss(s, t, temperature=4.0, beta=2.0, gamma=2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
    # a constant column (a class no image differs on) gives 0, not nan, thanks to the eps
    flat = torch.zeros(4, 3, dtype=torch.float64)
    assert math.isfinite(dist_loss(flat, flat, temperature=1.0, beta=1.0, gamma=1.0).item())


@pytest.mark.slow
def test_distill_method_dist_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = tmp_path / "teacher.safetensors"
    digits_teacher(teacher)
    out = tmp_path / "dist"
    r = ok(capsys, "distill", "--teacher", teacher, "--arch", "resnet8", "--dataset", "digits",
           "--epochs", "1", "--train-per-class", "10", "--test-per-class", "5", "--device",
           "cpu", "--method", "dist", "--dist-beta", "1.5", "--out", out,
           "--format", "json")  # fmt: skip
    assert math.isfinite(r.json()["top1"])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert '"train_dist"' in lines[-1]  # the DIST term is logged by its part name
    from safetensors import safe_open

    meta = safe_open(str(out / "model.safetensors"), "pt").metadata()
    import json

    objective = json.loads(meta["objective"])
    assert objective["terms"] == {"ce": 1.0, "dist": 1.0}
    assert (objective["dist_beta"], objective["dist_gamma"]) == (1.5, 2.0)
