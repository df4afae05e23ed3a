"""Loss functions checked against values worked out by hand and against naive loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from icckd_cli.losses import intra_class_contrastive, prediction_margin
from icckd_cli.methods.crd import CRDLoss, nce_criterion
from icckd_cli.methods.dkd import dkd_loss, dkd_parts
from icckd_cli.methods.icc import icc_terms, margin_gate
from icckd_cli.methods.kd import kd_loss
from icckd_cli.methods.rkd import rkd_angle, rkd_distance, rkd_loss
from icckd_cli.metrics.calibration import expected_calibration_error

E = math.e


def t(rows: list[list[float]], **kw: object) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, **kw)  # type: ignore[arg-type]


# One class, two images, tau = 0.5. Anchors (cat([z1, z2]), normalised):
#   A0 = (1, 0) img0, A1 = (0, 1) img1, A2 = (1, 0) img0, A3 = (-1, 0) img1.
# A0: pos A2 (cos 1), negs A1 (0), A3 (-1): l0 = log(1 + e^-2 + e^-4)   [cos / 0.5]
# A1: pos A3 (0),     negs A0 (0), A2 (0):  l1 = log 3
# A2: same as A0:                           l2 = l0
# A3: pos A1 (0),     negs A0 (-1), A2 (-1): l3 = log(1 + 2 e^-2)
# mean = (2 l0 + l1 + l3) / 4 = 0.40600507797244845
ONE_CLASS_Z1 = [[3.0, 0.0], [0.0, 0.5]]  # not unit length: the function normalises
ONE_CLASS_Z2 = [[2.0, 0.0], [-1.0, 0.0]]
ONE_CLASS_LOSS = 0.40600507797244845
L0 = math.log(1 + E**-2 + E**-4)


def test_icc_one_class_by_hand() -> None:
    loss = intra_class_contrastive(
        t(ONE_CLASS_Z1), t(ONE_CLASS_Z2), torch.tensor([0, 0]), temperature=0.5
    )
    assert loss.item() == pytest.approx(ONE_CLASS_LOSS, abs=1e-12)


def test_icc_anchor_mask_selects_anchors() -> None:
    # only A0 counts -> l0 from the hand example above
    mask = torch.tensor([True, False, False, False])
    loss = intra_class_contrastive(
        t(ONE_CLASS_Z1), t(ONE_CLASS_Z2), torch.tensor([0, 0]), temperature=0.5, anchor_mask=mask
    )
    assert loss.item() == pytest.approx(L0, abs=1e-12)


def test_icc_two_classes_negatives_only_from_same_class() -> None:
    # image 2 is alone in class 1: its anchors (rows 2 and 5) have no negative and are
    # excluded; it is no negative for class 0, so the one-class value is unchanged
    z1 = t(ONE_CLASS_Z1 + [[0.0, 1.0]])
    z2 = t(ONE_CLASS_Z2 + [[1.0, 1.0]])
    terms = icc_terms(z1, z2, torch.tensor([0, 0, 1]), temperature=0.5)
    assert terms.loss.item() == pytest.approx(ONE_CLASS_LOSS, abs=1e-12)
    assert terms.counted.item() == 4  # A0..A3 of the hand example
    assert terms.mean_negatives.item() == 2  # each has the two views of the other image


def test_icc_queue_supplies_negatives() -> None:
    # B = 1, tau = 1: A0 = (1, 0), A1 = (0, 1), positive cos 0 for both.
    # Queue: (1, 0) class 0, (0, 1) class 1 (ignored), (-1, 0) class 0.
    # A0: negs cos 1, -1 -> log(1 + e + 1/e); A1: negs cos 0, 0 -> log 3
    # mean = 1.253109126556245
    z1, z2, y = t([[1.0, 0.0]]), t([[0.0, 2.0]]), torch.tensor([0])
    queue = t([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    qy = torch.tensor([0, 1, 0])
    terms = icc_terms(z1, z2, y, temperature=1.0, queue=queue, queue_labels=qy)
    assert terms.loss.item() == pytest.approx(1.253109126556245, abs=1e-12)
    assert terms.counted.item() == 2 and terms.mean_negatives.item() == 2
    # without the queue no anchor has a negative
    assert intra_class_contrastive(z1, z2, y, temperature=1.0).item() == 0.0


def test_icc_queue_rows_are_not_renormalised() -> None:
    # queue row (0.5, 0) kept as is: A0 = (1, 0) neg cos 0.5 -> log(1 + e^0.5);
    # A1 = (0, 1) neg cos 0 -> log 2; mean = 0.8336120823700259
    loss = intra_class_contrastive(
        t([[1.0, 0.0]]),
        t([[0.0, 1.0]]),
        torch.tensor([0]),
        temperature=1.0,
        queue=t([[0.5, 0.0]]),
        queue_labels=torch.tensor([0]),
    )
    assert loss.item() == pytest.approx(0.8336120823700259, abs=1e-12)


def test_icc_gate_closing_every_anchor_gives_graph_zero() -> None:
    z1 = torch.randn(4, 3, requires_grad=True)
    z2 = torch.randn(4, 3, requires_grad=True)
    mask = torch.zeros(8, dtype=torch.bool)
    terms = icc_terms(z1, z2, torch.tensor([0, 0, 1, 1]), temperature=0.1, anchor_mask=mask)
    assert terms.loss.item() == 0.0 and terms.counted.item() == 0
    assert terms.mean_negatives.item() == 0.0
    assert terms.loss.requires_grad and terms.loss.grad_fn is not None
    terms.loss.backward()
    assert z1.grad is not None and z2.grad is not None
    assert torch.equal(z1.grad, torch.zeros_like(z1)) and torch.equal(z2.grad, torch.zeros_like(z2))


def naive_icc(z1, z2, labels, tau, queue, queue_labels, mask):  # type: ignore[no-untyped-def]
    """Eq. 2 and 4 of docs/method.md read literally, one anchor at a time."""
    b = z1.shape[0]
    zs = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    lab = labels.tolist() * 2
    losses = []
    for a in range(2 * b):
        if not mask[a]:
            continue
        pos = math.exp(float(zs[a] @ zs[(a + b) % (2 * b)]) / tau)
        negs = [float(zs[a] @ zs[j]) for j in range(2 * b) if lab[j] == lab[a] and j % b != a % b]
        negs += [
            float(zs[a] @ q)
            for q, ql in zip(queue, queue_labels.tolist(), strict=True)
            if ql == lab[a]
        ]
        if negs:
            losses.append(-math.log(pos / (pos + sum(math.exp(s / tau) for s in negs))))
    return sum(losses) / len(losses) if losses else 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_icc_matches_naive_loop(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    b, d, m = 9, 5, 12
    z1, z2 = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    y = torch.randint(0, 3, (b,), generator=g)
    queue = F.normalize(torch.randn(m, d, generator=g), dim=1)
    qy = torch.randint(0, 4, (m,), generator=g)
    mask = torch.rand(2 * b, generator=g) > 0.3
    got = intra_class_contrastive(
        z1, z2, y, temperature=0.2, queue=queue, queue_labels=qy, anchor_mask=mask
    )
    assert got.item() == pytest.approx(naive_icc(z1, z2, y, 0.2, queue, qy, mask), rel=1e-5)


def test_icc_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    queue = F.normalize(torch.randn(2, 3, generator=g, dtype=torch.float64), dim=1)

    def f(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = torch.tensor([0, 0, 1])
        return intra_class_contrastive(
            a, b, y, temperature=0.5, queue=queue, queue_labels=torch.tensor([1, 0])
        )

    assert torch.autograd.gradcheck(f, (z1, z2))


def test_icc_large_inputs_stay_finite() -> None:
    g = torch.Generator().manual_seed(4)
    z1 = (torch.randn(6, 4, generator=g) * 1e6).requires_grad_()
    z2 = (torch.randn(6, 4, generator=g) * 1e6).requires_grad_()
    loss = intra_class_contrastive(z1, z2, torch.tensor([0, 0, 0, 1, 1, 1]), temperature=0.01)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert z1.grad is not None and z2.grad is not None
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


def test_prediction_margin_by_hand() -> None:
    # softmax([0, 0, log 2]) = [1/4, 1/4, 1/2]
    logits = torch.tensor([[0.0, 0.0, math.log(2)]] * 2, requires_grad=True)
    m = prediction_margin(logits, torch.tensor([2, 0]))
    assert m.tolist() == pytest.approx([0.5 - 0.25, 0.25 - 0.5], abs=1e-6)
    assert not m.requires_grad
    assert margin_gate(logits, torch.tensor([2, 0]), 0.0).tolist() == [True, False]
    assert margin_gate(logits, torch.tensor([2, 0]), -1.0).tolist() == [True, True]


def test_kd_zero_for_identical_and_t_squared_by_hand() -> None:
    x = torch.randn(5, 7)
    assert kd_loss(x, x.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    # T = 1: teacher [log 3, 0] -> [3/4, 1/4], student [0, 0] -> [1/2, 1/2]
    # KL = 3/4 log(3/2) + 1/4 log(1/2) = 0.13081203594113697
    s = torch.zeros(1, 2)
    kl = 0.75 * math.log(1.5) - 0.25 * math.log(2)
    assert kd_loss(s, torch.tensor([[math.log(3), 0.0]]), 1.0).item() == pytest.approx(kl)
    # T = 2 with teacher logits doubled gives the same distributions, times T^2 = 4
    assert kd_loss(s, torch.tensor([[2 * math.log(3), 0.0]]), 2.0).item() == pytest.approx(4 * kl)


def test_dkd_recombines_into_kd_per_sample() -> None:
    # DKD paper: KD = TCKD + (1 - p_t^T) * NCKD, p_t^T the teacher's target probability
    g = torch.Generator().manual_seed(5)
    s, te = torch.randn(16, 10, generator=g) * 3, torch.randn(16, 10, generator=g) * 3
    y = torch.randint(0, 10, (16,), generator=g)
    temp = 4.0
    tckd, nckd = dkd_parts(s, te, y, temperature=temp, reduction="none")
    p_target = (te / temp).softmax(1).gather(1, y[:, None]).squeeze(1)
    kd = kd_loss(s, te, temp, reduction="none")
    torch.testing.assert_close(kd, tckd + (1 - p_target) * nckd, rtol=1e-4, atol=1e-6)
    got = dkd_loss(s, te, y, alpha=1.0, beta=8.0, temperature=temp)
    torch.testing.assert_close(got, tckd.mean() + 8.0 * nckd.mean())


def test_dkd_matches_masking_formulation() -> None:
    # independent formulation: binary probabilities by summing, NCKD by pushing the
    # target logit down by 1000 instead of removing it
    g = torch.Generator().manual_seed(6)
    s, te = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    y = torch.randint(0, 6, (8,), generator=g)
    temp = 2.0
    gt = F.one_hot(y, 6).float()
    ps, pt = (s / temp).softmax(1), (te / temp).softmax(1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (bt.log() - bs.log())).sum(1).mean() * temp**2
    qs = F.log_softmax(s / temp - 1000 * gt, 1)
    qt = F.softmax(te / temp - 1000 * gt, 1)
    nckd = (qt * (qt.clamp_min(1e-30).log() - qs)).sum(1).mean() * temp**2
    got_t, got_n = dkd_parts(s, te, y, temperature=temp)
    torch.testing.assert_close(got_t, tckd, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got_n, nckd, rtol=1e-4, atol=1e-6)


def test_rkd_distance_by_hand() -> None:
    # student points 0, 1, 2 on a line: distances 1, 1, 2, mean 4/3 -> 3/4, 3/4, 3/2
    # teacher points 0, 1, 3: distances 1, 2, 3, mean 2 -> 1/2, 1, 3/2
    # differences 1/4, -1/4, 0, each pair twice in the 3x3 matrix: smooth L1 0.5 x^2
    # -> 4 * 0.5 / 16 / 9 = 1/72
    fs, ft = t([[0.0], [1.0], [2.0]]), t([[0.0], [1.0], [3.0]])
    assert rkd_distance(fs, ft).item() == pytest.approx(1 / 72, rel=1e-6)


def test_rkd_angle_by_hand() -> None:
    # student (0,0), (1,0), (0,1); teacher (0,0), (1,0), (-1,0). Cosines at vertex i between
    # j and k (j, k != i, j != k): student 0, 1/sqrt2, 1/sqrt2; teacher -1, 1, 1. Each twice
    # in the 27 entries; the rest agree. smooth L1: |1| -> 0.5, d = 1 - 1/sqrt2 -> 0.5 d^2
    # -> (2 * 0.5 + 4 * 0.5 * d^2) / 27 = 0.04339158797236333
    fs, ft = t([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), t([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    assert rkd_angle(fs, ft).item() == pytest.approx(0.04339158797236333, rel=1e-6)


def test_rkd_invariant_to_scaling_and_teacher_gets_no_gradient() -> None:
    g = torch.Generator().manual_seed(7)
    fs, ft = torch.randn(8, 5, generator=g), torch.randn(8, 6, generator=g)
    for fn in (rkd_distance, rkd_angle):
        torch.testing.assert_close(fn(fs * 3.0, ft * 0.2), fn(fs, ft), rtol=1e-4, atol=1e-6)
        assert fn(fs, fs.clone()).item() == pytest.approx(0.0, abs=1e-6)
    fs.requires_grad_()
    ft.requires_grad_()
    loss = rkd_loss(fs, ft)
    loss.backward()
    assert fs.grad is not None and torch.isfinite(fs.grad).all() and ft.grad is None
    expected = 25 * rkd_distance(fs, ft) + 50 * rkd_angle(fs, ft)
    torch.testing.assert_close(loss, expected)


def test_ece_by_hand() -> None:
    # confidences 0.95 (right), 0.85 (wrong), 0.75 (right), 0.65 (right), 5 bins of 0.2:
    # (0.8, 1]: acc 1/2, conf 0.9 -> 2/4 * 0.4 = 0.2; (0.6, 0.8]: acc 1, conf 0.7 -> 2/4 * 0.3
    # ECE = 0.35
    probs = torch.tensor([[0.95, 0.05], [0.85, 0.15], [0.25, 0.75], [0.65, 0.35]])
    ece = expected_calibration_error(probs.log(), torch.tensor([0, 1, 1, 0]), n_bins=5)
    assert ece.item() == pytest.approx(0.35, abs=1e-6)
    perfect = torch.tensor([[10.0, -10.0]] * 3)
    assert expected_calibration_error(perfect, torch.tensor([0, 0, 0])).item() < 1e-4


def make_crd(**kw: object) -> CRDLoss:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    return CRDLoss(6, 5, 50, feat_dim=8, nce_k=100, generator=gen, **kw)  # type: ignore[arg-type]


def test_crd_samples_exclude_the_positive() -> None:
    crd = make_crd()
    assert crd.nce_k == 49  # capped at n_data - 1
    index = torch.tensor([0, 7, 49])
    idx = crd.sample_contrast(index)
    assert idx.shape == (3, 50)
    assert torch.equal(idx[:, 0], index)
    assert (idx[:, 1:] != index[:, None]).all()
    assert idx.min() >= 0 and idx.max() < 50


def test_crd_fixed_memory_finite_loss_and_gradients() -> None:
    crd = make_crd()
    sizes = {k: (v.shape, v.data_ptr()) for k, v in crd.state_dict().items()}
    for step in range(4):
        f_s = torch.randn(4, 6, requires_grad=True)
        f_t = torch.randn(4, 5)
        index = torch.randperm(50)[:4]
        before = crd.memory_s[index].clone()
        crd.zero_grad()
        loss = crd(f_s, f_t, index)
        assert torch.isfinite(loss) and loss.item() > 0
        loss.backward()
        assert f_s.grad is not None and f_s.grad.abs().sum() > 0
        for head in (crd.embed_s, crd.embed_t):
            assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
        # momentum update: normalise(0.5 * old + 0.5 * new embedding)
        e_s = F.normalize(crd.embed_s(f_s), dim=1).detach()
        torch.testing.assert_close(crd.memory_s[index], F.normalize(before + e_s, dim=1))
        if step == 0:
            z_s, z_t = crd.z_s.item(), crd.z_t.item()
            assert z_s > 0 and z_t > 0
    assert (crd.z_s.item(), crd.z_t.item()) == (z_s, z_t)  # estimated once
    assert {k: (v.shape, v.data_ptr()) for k, v in crd.state_dict().items()} == sizes


def test_crd_first_batch_matches_formula() -> None:
    crd = make_crd(nce_t=0.5)
    f_s, f_t = torch.randn(2, 6), torch.randn(2, 5)
    idx = torch.tensor([[3, 1, 2, 4], [8, 9, 3, 3]])
    mem_s, mem_t = crd.memory_s.clone(), crd.memory_t.clone()
    loss = crd(f_s, f_t, idx[:, 0], idx)
    e_s = F.normalize(crd.embed_s(f_s), dim=1)
    e_t = F.normalize(crd.embed_t(f_t), dim=1)
    total = 0.0
    for anchor, bank in ((e_s, mem_t), (e_t, mem_s)):
        out = torch.exp(torch.einsum("bkf,bf->bk", bank[idx], anchor) / 0.5)
        p = out / (out.mean() * 50)  # Z = mean score x n_data on the first batch
        noise = 3 / 50  # K * P_noise with K = 3 negatives
        total += (
            -(
                torch.log(p[:, 0] / (p[:, 0] + noise + 1e-7)).sum()
                + torch.log(noise / (p[:, 1:] + noise + 1e-7)).sum()
            ).item()
            / 2
        )
    assert loss.item() == pytest.approx(total, rel=1e-5)
    assert nce_criterion(torch.full((1, 3), 1 / 25), 50).item() == pytest.approx(
        -math.log(0.5) - 2 * math.log(0.5), rel=1e-5
    )  # P = K / n_data everywhere: every ratio is 1/2


@pytest.mark.parametrize("seed", [0, 1])
def test_icc_class_bank_equals_the_flat_bank(seed: int) -> None:
    """Each anchor's own K slots (C, K, D) give the loss, statistics and gradient of the flat
    (C*K, D) bank with -1 on empty slots, the form every class's slots are compared in."""
    g = torch.Generator().manual_seed(seed)
    b, d, c, k = 8, 6, 5, 3
    z1 = torch.randn(b, d, generator=g, requires_grad=True)
    z2 = torch.randn(b, d, generator=g, requires_grad=True)
    y = torch.randint(0, c, (b,), generator=g)
    bank = F.normalize(torch.randn(c, k, d, generator=g), dim=2)
    filled = torch.rand(c, k, generator=g) > 0.4
    flat_labels = torch.where(filled, torch.arange(c)[:, None].expand(c, k), -1).reshape(-1)
    mask = torch.rand(2 * b, generator=g) > 0.2
    flat = icc_terms(z1, z2, y, temperature=0.2, queue=bank.reshape(-1, d),
                     queue_labels=flat_labels, anchor_mask=mask)  # fmt: skip
    (g1, g2) = torch.autograd.grad(flat.loss, (z1, z2))
    per_class = icc_terms(z1, z2, y, temperature=0.2, anchor_mask=mask, class_bank=bank,
                          class_filled=filled)  # fmt: skip
    (h1, h2) = torch.autograd.grad(per_class.loss, (z1, z2))
    torch.testing.assert_close(per_class.loss, flat.loss, rtol=1e-6, atol=1e-6)
    assert torch.equal(per_class.counted, flat.counted)
    torch.testing.assert_close(per_class.mean_negatives, flat.mean_negatives)
    torch.testing.assert_close(h1, g1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h2, g2, rtol=1e-5, atol=1e-6)
    assert flat.mean_negatives > 0  # the bank really supplied negatives
