"""methods/kd.py: Hinton KD with and without logit standardization, in float64.

The reference below is written out with Python loops and math, independently of torch's
softmax and KL, so a change in the tensor code cannot move both sides together.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from icckd_cli.methods.dkd import dkd_loss
from icckd_cli.methods.kd import kd_loss, standardize
from tests.helpers import digits_teacher, ok


def _standardized(row: list[float]) -> list[float]:
    n = len(row)
    mean = sum(row) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in row) / (n - 1))  # unbiased
    return [(v - mean) / (std + 1e-7) for v in row]


def _softmax(row: list[float], t: float) -> list[float]:
    top = max(row)
    e = [math.exp((v - top) / t) for v in row]
    return [v / sum(e) for v in e]


def reference_kd(s: list[list[float]], t: list[list[float]], temp: float, std: bool) -> float:
    """T^2 * mean over rows of KL(softmax(t/T) || softmax(s/T)), by loops."""
    total = 0.0
    for zs, zt in zip(s, t, strict=True):
        if std:
            zs, zt = _standardized(zs), _standardized(zt)
        p, q = _softmax(zt, temp), _softmax(zs, temp)
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    return temp**2 * total / len(s)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0, 8.0])
@pytest.mark.parametrize(("batch", "classes"), [(1, 2), (3, 5), (16, 10), (7, 100)])
@pytest.mark.parametrize("std", [False, True])
def test_kd_matches_the_loop_reference(
    temperature: float, batch: int, classes: int, std: bool
) -> None:
    g = torch.Generator().manual_seed(batch * 1000 + classes)
    s = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 3
    t = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 3
    got = kd_loss(s, t, temperature=temperature, standardize=std)
    assert got.dtype == torch.float64 and got.shape == ()
    want = reference_kd(s.tolist(), t.tolist(), temperature, std)
    assert got.item() == pytest.approx(want, rel=1e-12, abs=1e-14)


def test_kd_by_hand() -> None:
    # one row, two classes, T = 1: p_t = (1/2, 1/2), q_s = softmax(0, ln 3) = (1/4, 3/4)
    # KL = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3)
    s = torch.tensor([[0.0, math.log(3)]], dtype=torch.float64)
    t = torch.zeros(1, 2, dtype=torch.float64)
    assert kd_loss(s, t, temperature=1.0).item() == pytest.approx(0.5 * math.log(4 / 3), 1e-14)
    # T = 2 scales the logits by 1/2 and the loss by 4: q_s = (1/(1+sqrt3), sqrt3/(1+sqrt3))
    r3 = math.sqrt(3)
    kl = 0.5 * math.log(0.5 * (1 + r3)) + 0.5 * math.log(0.5 * (1 + r3) / r3)
    assert kd_loss(s, t, 2.0).item() == pytest.approx(4 * kl, 1e-14)


def test_standardize_by_hand_and_its_invariance() -> None:
    # (1, 2, 3): mean 2, unbiased std 1 -> (-1, 0, 1) / (1 + 1e-7)
    z = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    want = torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64) / (1 + 1e-7)
    assert torch.allclose(standardize(z), want, rtol=0, atol=1e-15)
    # a standardised loss ignores a per-row shift and positive scale of either side's logits
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g)
    t = t.double()
    base = kd_loss(s, t, 2.0, standardize=True)
    moved = kd_loss(5 * s + 3, 0.5 * t - 1, 2.0, standardize=True)
    assert moved.item() == pytest.approx(base.item(), rel=1e-6)


def test_default_is_bit_identical_and_the_old_call_sites_keep_working() -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    plain = kd_loss(s, t, 4.0)
    assert torch.equal(plain, kd_loss(s, t, temperature=4.0, standardize=False))
    per_row = kd_loss(s, t, 4.0, reduction="none")
    assert per_row.shape == (5,) and torch.allclose(per_row.mean(), plain)


def test_standardization_reaches_dkd() -> None:
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    kw = {"alpha": 1.0, "beta": 8.0, "temperature": 2.0}
    on = dkd_loss(s, t.double(), y, standardize_logits=True, **kw)
    want = dkd_loss(standardize(s), standardize(t.double()), y, **kw)
    assert torch.equal(on, want)
    assert not torch.equal(on, dkd_loss(s, t.double(), y, **kw))


def test_standardization_without_a_logit_term_is_refused() -> None:
    from icckd_cli.base.errors import UsageError
    from icckd_cli.settings.config import DistillConfig, build

    with pytest.raises(UsageError) as err:
        build(DistillConfig, {"method": "crd", "logit_standardization": True})
    assert str(err.value.message) == (
        "invalid value for --logit-standardization: it standardises the logits of the kd and "
        "dkd terms and --method crd has neither; use --method kd or dkd, or give --kd-weight"
    )
    both = build(DistillConfig, {"method": "kd+rkd", "logit_standardization": True})
    assert both.logit_standardization is True
    build(DistillConfig, {"method": "dist", "kd_weight": 1.0, "logit_standardization": True})


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_distill_with_logit_standardization_end_to_end(
    method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = tmp_path / "teacher.safetensors"
    digits_teacher(teacher)
    out = tmp_path / method
    r = ok(capsys, "distill", "--teacher", teacher, "--arch", "resnet8", "--dataset", "digits",
           "--epochs", "1", "--train-per-class", "10", "--test-per-class", "5", "--device",
           "cpu", "--method", method, "--logit-standardization", "--out", out,
           "--format", "json")  # fmt: skip
    assert math.isfinite(r.json()["top1"])
    config = (out / "config.json").read_text()
    assert '"logit_standardization": true' in config
