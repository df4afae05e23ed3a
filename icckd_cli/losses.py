"""Pure loss functions on tensors: the intra-class contrastive term, KD, DKD, RKD, ECE."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from icckd_cli.methods.crd import CRDLoss

__all__ = [
    "CRDLoss",
    "IntraClassTerms",
    "dkd_loss",
    "dkd_parts",
    "expected_calibration_error",
    "icc_terms",
    "intra_class_contrastive",
    "kd_loss",
    "margin_gate",
    "prediction_margin",
    "rkd_angle",
    "rkd_distance",
    "rkd_loss",
]

Reduction = Literal["batchmean", "none"]


def prediction_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Margin p_y - max_{k != y} p_k of softmax(logits), without gradient: (N, C), (N,) -> (N,)."""
    logits = logits.detach()
    # half-precision probabilities are too coarse to compare against a threshold like 0.5
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    p = logits.softmax(dim=1)
    target = labels.to(p.device).long().unsqueeze(1)
    p_y = p.gather(1, target).squeeze(1)
    p_other = p.scatter(1, target, float("-inf")).amax(dim=1)
    return p_y - p_other


def margin_gate(logits: Tensor, labels: Tensor, delta: float) -> Tensor:
    """Anchors whose margin exceeds delta; delta <= -1 passes all: (N, C), (N,) -> (N,) bool."""
    if delta <= -1:
        return torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    return prediction_margin(logits, labels) > delta


class IntraClassTerms(NamedTuple):
    """The intra-class loss and what training logs about it, all 0-dim tensors (no host sync)."""

    loss: Tensor
    counted: Tensor  # anchors that passed the gate and had at least one negative
    mean_negatives: Tensor  # mean number of negatives per counted anchor, 0 when none counts


def icc_terms(
    z1: Tensor,
    z2: Tensor,
    labels: Tensor,
    *,
    temperature: float,
    queue: Tensor | None = None,
    queue_labels: Tensor | None = None,
    anchor_mask: Tensor | None = None,
    class_bank: Tensor | None = None,
    class_filled: Tensor | None = None,
) -> IntraClassTerms:
    """Intra-class contrastive loss with its anchor statistics: (B, D), (B, D), (B,) -> terms.

    The cache comes as `queue` (M, D) with `queue_labels` (M,), or per class as `class_bank`
    (C, K, D) with `class_filled` (C, K) bool: then each anchor meets only the K slots of its
    own class, the same negatives as the flat form of the bank at 1/C of the work.
    """
    b = z1.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D), rows ordered as cat([z1, z2])
    device = anchors.device
    lab = labels.to(device).long().repeat(2)  # (2B,)
    image = torch.arange(b, device=device).repeat(2)  # (2B,)

    sims = anchors @ anchors.T  # (2B, 2B)
    negative = (lab[:, None] == lab[None, :]) & (image[:, None] != image[None, :])
    if queue is not None:
        if queue_labels is None:
            raise ValueError("queue_labels must be given with queue")
        # queue rows were normalised when they were cached
        q = queue.to(device=device, dtype=anchors.dtype)  # (M, D)
        sims = torch.cat([sims, anchors @ q.T], dim=1)  # (2B, 2B + M)
        negative = torch.cat([negative, lab[:, None] == queue_labels.to(device)[None, :]], dim=1)
    if class_bank is not None:
        if class_filled is None:
            raise ValueError("class_filled must be given with class_bank")
        # other classes' slots could only ever be masked out: gather the anchor's own K
        own = class_bank.to(device=device, dtype=anchors.dtype)[lab]  # (2B, K, D)
        sims = torch.cat([sims, torch.einsum("nd,nkd->nk", anchors, own)], dim=1)  # (2B, +K)
        negative = torch.cat([negative, class_filled.to(device)[lab]], dim=1)

    logits = sims / temperature
    pos_col = (torch.arange(2 * b, device=device) + b) % (2 * b)  # the other view of the image
    positive = torch.zeros_like(negative).scatter_(1, pos_col[:, None], True)
    # the denominator holds exactly the positive and the negatives; -inf drops the rest
    lse = logits.masked_fill(~(positive | negative), float("-inf")).logsumexp(dim=1)
    per_anchor = lse - logits.gather(1, pos_col[:, None]).squeeze(1)  # (2B,)

    n_neg = negative.sum(dim=1)  # (2B,)
    counted = n_neg > 0
    if anchor_mask is not None:
        counted = counted & anchor_mask.to(device=device, dtype=torch.bool)
    n = counted.sum().to(anchors.dtype)
    denom = n.clamp(min=1)
    # where (not a product) keeps the sum exactly 0 and in the graph when no anchor counts
    loss = torch.where(counted, per_anchor, torch.zeros_like(per_anchor)).sum() / denom
    mean_negatives = (n_neg * counted).sum().to(anchors.dtype) / denom
    return IntraClassTerms(loss, n, mean_negatives)


def intra_class_contrastive(
    z1: Tensor,
    z2: Tensor,
    labels: Tensor,
    *,
    temperature: float,
    queue: Tensor | None = None,
    queue_labels: Tensor | None = None,
    anchor_mask: Tensor | None = None,
) -> Tensor:
    """L_intra of METHOD.md: (B, D), (B, D), (B,) [, queue (M, D), (M,), mask (2B,)] -> ()."""
    return icc_terms(
        z1,
        z2,
        labels,
        temperature=temperature,
        queue=queue,
        queue_labels=queue_labels,
        anchor_mask=anchor_mask,
    ).loss


def _reduce(per_sample: Tensor, reduction: Reduction) -> Tensor:
    """Batch mean or per-sample values: (N,) -> () or (N,)."""
    if reduction == "none":
        return per_sample
    if reduction == "batchmean":
        return per_sample.mean()
    raise ValueError(f"unknown reduction {reduction!r}; use 'batchmean' or 'none'")


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) per row from log-probabilities: (N, K), (N, K) -> (N,)."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    *,
    reduction: Reduction = "batchmean",
) -> Tensor:
    """Hinton KD, T^2 * KL(softmax(t/T) || softmax(s/T)): (N, C), (N, C) -> () or (N,)."""
    log_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    log_s = F.log_softmax(student_logits / temperature, dim=1)
    return _reduce(_kl_rows(log_t, log_s) * temperature**2, reduction)


def _binary_log_probs(logits: Tensor, target: Tensor) -> Tensor:
    """log [p_y, 1 - p_y] computed in log space, stable for confident logits: (N, C) -> (N, 2)."""
    lse = logits.logsumexp(dim=1)
    log_target = logits.gather(1, target[:, None]).squeeze(1) - lse
    log_rest = logits.masked_fill(F.one_hot(target, logits.shape[1]).bool(), float("-inf"))
    return torch.stack([log_target, log_rest.logsumexp(dim=1) - lse], dim=1)


def dkd_parts(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float,
    reduction: Reduction = "batchmean",
) -> tuple[Tensor, Tensor]:
    """DKD's (TCKD, NCKD), each scaled by T^2: (N, C), (N, C), (N,) -> () or (N,) each."""
    s = student_logits / temperature
    t = teacher_logits.detach() / temperature
    target = labels.to(s.device).long()
    c = s.shape[1]
    tckd = _kl_rows(_binary_log_probs(t, target), _binary_log_probs(s, target))
    # dropping the target column renormalises over the non-target classes exactly; a gather
    # of the other columns, not a boolean mask, whose indexing would wait for the device
    j = torch.arange(c - 1, device=s.device)[None, :]  # (1, C-1)
    others = j + (j >= target[:, None]).long()  # (N, C-1): every column but the target
    log_t_rest = F.log_softmax(t.gather(1, others), dim=1)
    log_s_rest = F.log_softmax(s.gather(1, others), dim=1)
    nckd = _kl_rows(log_t_rest, log_s_rest)
    scale = temperature**2
    return _reduce(tckd * scale, reduction), _reduce(nckd * scale, reduction)


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
    beta: float,
    temperature: float,
) -> Tensor:
    """Decoupled KD, alpha * TCKD + beta * NCKD, no warm-up: (N, C), (N, C), (N,) -> ()."""
    tckd, nckd = dkd_parts(student_logits, teacher_logits, labels, temperature=temperature)
    return alpha * tckd + beta * nckd


def _pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances with an exact-zero diagonal: (N, D) -> (N, N)."""
    sq = x.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2 * x @ x.T
    # the clamp keeps sqrt's gradient finite where two rows coincide
    off_diag = 1 - torch.eye(x.shape[0], device=x.device, dtype=x.dtype)
    return d2.clamp(min=1e-12).sqrt() * off_diag


def _normalised_distances(x: Tensor) -> Tensor:
    """Pairwise distances divided by their mean over off-diagonal pairs: (N, D) -> (N, N)."""
    n = x.shape[0]
    d = _pairwise_distances(x)
    return d / (d.sum() / (n * (n - 1)))


def _angles(x: Tensor) -> Tensor:
    """Cosine of the angle at vertex i between rows j and k, flattened: (N, D) -> (N^3,)."""
    diff = F.normalize(x[None, :, :] - x[:, None, :], dim=2)  # (N, N, D): row j minus row i
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def rkd_distance(f_s: Tensor, f_t: Tensor) -> Tensor:
    """RKD distance term, smooth L1 on mean-normalised pairwise distances: (N, ...) x2 -> ()."""
    s, t = f_s.flatten(1), f_t.detach().flatten(1)
    if s.shape[0] < 2:
        return f_s.sum() * 0.0  # no pair to compare
    return F.smooth_l1_loss(_normalised_distances(s), _normalised_distances(t))


def rkd_angle(f_s: Tensor, f_t: Tensor) -> Tensor:
    """RKD angle term, smooth L1 on the cosines of all triplets: (N, ...) x2 -> ()."""
    s, t = f_s.flatten(1), f_t.detach().flatten(1)
    return F.smooth_l1_loss(_angles(s), _angles(t))


def rkd_loss(
    f_s: Tensor, f_t: Tensor, distance_weight: float = 25.0, angle_weight: float = 50.0
) -> Tensor:
    """Weighted RKD distance plus angle terms: (N, ...) x2 -> ()."""
    return distance_weight * rkd_distance(f_s, f_t) + angle_weight * rkd_angle(f_s, f_t)


def expected_calibration_error(logits: Tensor, labels: Tensor, n_bins: int = 15) -> Tensor:
    """ECE in [0, 1] over equal-width confidence bins (lo, hi]: (N, C), (N,) -> ()."""
    p = logits.detach().float().softmax(dim=1)
    conf, pred = p.max(dim=1)
    correct = (pred == labels.to(p.device)).float()
    edges = torch.linspace(0, 1, n_bins + 1, device=p.device)
    # right=False puts a confidence equal to an inner edge into the lower bin, as (lo, hi] wants
    bins = torch.bucketize(conf, edges[1:-1])
    count = torch.zeros(n_bins, device=p.device).index_add_(0, bins, torch.ones_like(conf))
    gap = torch.zeros(n_bins, device=p.device).index_add_(0, bins, conf - correct)
    # |sum(conf - acc)| / N per bin equals weight_b * |conf_b - acc_b|
    return gap.abs().sum() / count.sum().clamp(min=1)
