"""The intra-class teacher term of docs/method.md: the prediction margin, its gate, L_intra.

Not a distillation method: it trains the teacher (CE + icc_weight * L_intra, settings in
TeacherLoss). The gate is written here once; the teacher's objective calls `margin_gate`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


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
    """L_intra of docs/method.md: (B, D), (B, D), (B,) [, queue (M, D), (M,), mask (2B,)] -> ()."""
    return icc_terms(
        z1,
        z2,
        labels,
        temperature=temperature,
        queue=queue,
        queue_labels=queue_labels,
        anchor_mask=anchor_mask,
    ).loss
