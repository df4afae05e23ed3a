"""Soft-label diversity statistics (docs/method.md, docs/softlabels.md), fed batch by batch.

With p = softmax(logits / T) and q = p without the target class, renormalised to sum 1,
`SoftLabelAccumulator` streams everything it can into float64 sums whose size depends on
the number of classes C and feature width D only:

- counts, correct predictions, sums of p_y, of the entropies of p and q: O(C);
- per-class sums of p (the soft-label centroids): C x C;
- per-class sums of features (the feature centroids): C x D;
- one global D x D scatter matrix of the features, which together with the per-class sums
  gives S_W and S_B for NC1;
- the effective rank of class c uses the Gram matrix P_c^T P_c (the singular values of P_c
  are the square roots of its eigenvalues), formed from the stored rows below one class at
  a time in `compute()`: C x C float64 at any moment, never C^3.

Only the exact mean pairwise distances and the effective rank need per-image storage: every
sample's p and q (2 x N x C float32) and penultimate features (N x D float32) are kept on
the CPU, e.g. 40 MB + 51 MB for the 50k CIFAR-100 training images with D = 256. They are
compared in blocks, so no N x N matrix is built for a big class. The first rows of p per
class are handed out as `SoftLabelStats.examples` for the PCA figure at no extra cost.

Conventions: a class with a single sample has intra-class distance 0 (it has no pairs) and
counts in the means over classes; a class with no samples has count 0, NaN statistics and
is left out of every mean, including the inter-class distance; with fewer than two present
classes the inter-class distances, ratios and NC1 are NaN. Feature distances use the raw
penultimate features, not normalised ones. Accuracies are percentages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from icckd_cli.base.errors import IcckdError

# Rows per block when comparing samples: a 2048 x 2048 float64 block is 32 MB.
PAIR_CHUNK = 2048
# Per-class statistics besides "class" and "count"; the last four are also averaged over
# the present classes into the overall statistics.
PER_CLASS_KEYS = ("accuracy", "target_prob", "nontarget_mass", "entropy", "entropy_nontarget",
                  "intra_distance", "intra_distance_nontarget", "feature_intra_distance",
                  "effective_rank")  # fmt: skip
CLASS_MEANS = PER_CLASS_KEYS[-4:]


def mean_pairwise_distance(x: Tensor, chunk: int = PAIR_CHUNK) -> float:
    """Mean Euclidean distance over unordered pairs i < j of the rows of x (N, K); 0 if N < 2."""
    n = x.shape[0]
    if n < 2:
        return 0.0
    # cdist expands |a - b|^2 via dot products; centring first keeps a large common offset
    # (raw activations) from cancelling away the digits of small distances.
    centre = x.sum(0, dtype=torch.float64) / n
    total = 0.0
    for i in range(0, n, chunk):
        a = x[i : i + chunk].double() - centre
        for j in range(i, n, chunk):
            d = torch.cdist(a, x[j : j + chunk].double() - centre)
            # A block on the diagonal holds each pair twice and the zero self-distances once.
            total += d.triu(1).sum().item() if i == j else d.sum().item()
    return total / (n * (n - 1) / 2)


def effective_rank_from_gram(gram: Tensor) -> float:
    """exp(entropy of the L1-normalised singular values) of P, given gram = P^T P (K, K)."""
    eig = torch.linalg.eigvalsh(gram.double()).clamp_min(0.0)
    if eig.max() <= 0:
        return float("nan")
    # The eigensolver's noise (~K eps lambda_max) would otherwise turn into spurious singular
    # values of ~1e-8 sigma_max and lift the rank of a rank-1 matrix above 1.
    eig = torch.where(eig > eig.max() * gram.shape[0] * torch.finfo(eig.dtype).eps, eig, 0.0)
    s = eig.sqrt()
    s = s / s.sum()
    return math.exp(-torch.special.xlogy(s, s).sum().item())


def pca_2d(points: Tensor) -> Tensor:
    """Project points (N, K) on their first two principal components: (N, 2), signs fixed."""
    x = points.double() - points.double().mean(0)
    out = torch.zeros(points.shape[0], 2, dtype=torch.float64)
    if x.shape[0] < 2:
        return out
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    comps = vh[:2]
    # SVD signs are arbitrary; make each component's largest loading positive so figures
    # do not flip between runs.
    signs = comps.gather(1, comps.abs().argmax(1, keepdim=True)).sign()
    out[:, : comps.shape[0]] = x @ (comps * signs).T
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) else float("nan")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


@dataclass
class SoftLabelStats:
    """The diversity statistics of one checkpoint on one split, at temperature T."""

    temperature: float
    overall: dict[str, float]
    per_class: list[dict[str, float]]
    # First rows of p per present class (n_c, C), for the PCA figure; not part of to_dict().
    examples: dict[int, Tensor] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: temperature, overall and per_class, with NaN written as None."""

        def clean(d: dict[str, float]) -> dict[str, float | None]:
            return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}

        return {
            "temperature": self.temperature,
            "overall": clean(self.overall),
            "per_class": [clean(row) for row in self.per_class],
        }


class SoftLabelAccumulator:
    """Streams logits (B, C), features (B, D) and labels (B,) into `SoftLabelStats`."""

    def __init__(
        self, num_classes: int, feature_dim: int, temperature: float = 4.0, max_examples: int = 200
    ) -> None:
        """Empty sums for C = num_classes and D = feature_dim; keep max_examples p per class."""
        if temperature <= 0:
            raise IcckdError(f"temperature must be positive, got {temperature}; pass e.g. 4.")
        c, d, f64 = num_classes, feature_dim, torch.float64
        self.num_classes, self.feature_dim = c, d
        self.temperature, self.max_examples = float(temperature), max_examples
        self.count = torch.zeros(c, dtype=torch.long)
        self.correct = torch.zeros(c, dtype=torch.long)
        self.sums = {k: torch.zeros(c, dtype=f64) for k in ("target", "ent", "ent_nt")}
        self.p_sum = torch.zeros(c, c, dtype=f64)
        # Features are summed around a shift (the first batch's mean) so that S_W, a
        # difference of large sums, does not cancel catastrophically for raw activations.
        self.shift: Tensor | None = None
        self.h_sum = torch.zeros(c, d, dtype=f64)
        self.scatter = torch.zeros(d, d, dtype=f64)
        self.stored: dict[str, list[list[Tensor]]] = {k: [[] for _ in range(c)] for k in "pqh"}

    def update(self, logits: Tensor, features: Tensor, labels: Tensor) -> None:
        """Add a batch: logits (B, C), penultimate features (B, D), integer labels (B,)."""
        b, c = logits.shape
        if c != self.num_classes or features.shape != (b, self.feature_dim):
            raise ValueError(
                f"expected logits (B, {self.num_classes}) and features (B, {self.feature_dim}),"
                f" got {tuple(logits.shape)} and {tuple(features.shape)}"
            )
        labels = labels.detach().cpu().long()
        if b and (labels.min() < 0 or labels.max() >= c):
            raise IcckdError(
                f"label {labels.max().item()} does not fit a model with {c} classes; use a"
                " checkpoint trained on this data set."
            )
        z = logits.detach().cpu().double() / self.temperature
        h = features.detach().cpu().double()
        target = torch.nn.functional.one_hot(labels, c).bool()
        p = z.softmax(1)
        # q from the non-target logits directly: accurate even when 1 - p_y underflows.
        q = z.masked_fill(target, -math.inf).softmax(1)
        if self.shift is None:
            self.shift = h.mean(0) if b else torch.zeros(self.feature_dim, dtype=torch.float64)
        hs = h - self.shift

        self.count += torch.bincount(labels, minlength=c)
        self.correct += torch.bincount(labels[z.argmax(1) == labels], minlength=c)
        self.sums["target"].index_add_(0, labels, p[target])
        self.sums["ent"].index_add_(0, labels, -torch.special.xlogy(p, p).sum(1))
        self.sums["ent_nt"].index_add_(0, labels, -torch.special.xlogy(q, q).sum(1))
        self.p_sum.index_add_(0, labels, p)
        self.h_sum.index_add_(0, labels, hs)
        self.scatter += hs.T @ hs

        order = labels.argsort(stable=True)
        sizes = torch.bincount(labels, minlength=c).tolist()
        groups = zip(*(t[order].split(sizes) for t in (p, q, h)), strict=True)
        for k, (pc, qc, hc) in enumerate(groups):
            if pc.shape[0]:
                for key, t in zip("pqh", (pc, qc, hc), strict=True):
                    self.stored[key][k].append(t.float())

    def _class_rows(self, key: str, k: int) -> Tensor:
        width = self.feature_dim if key == "h" else self.num_classes
        rows = self.stored[key][k]
        return torch.cat(rows) if rows else torch.zeros(0, width)

    def _gram(self, k: int) -> Tensor:
        """P_c^T P_c (C, C) in float64 from the stored soft labels of class k."""
        pc = self._class_rows("p", k).double()
        return pc.T @ pc

    def _class_stats(self, k: int) -> dict[str, float]:
        """The per-class row of class k; NaN statistics when it has no samples."""
        n = int(self.count[k])
        row: dict[str, float] = {"class": k, "count": n}
        if n == 0:
            return row | dict.fromkeys(PER_CLASS_KEYS, float("nan"))
        target = self.sums["target"][k].item() / n
        return row | {
            "accuracy": 100.0 * self.correct[k].item() / n,
            "target_prob": target,
            "nontarget_mass": 1.0 - target,
            "entropy": self.sums["ent"][k].item() / n,
            "entropy_nontarget": self.sums["ent_nt"][k].item() / n,
            "intra_distance": mean_pairwise_distance(self._class_rows("p", k)),
            "intra_distance_nontarget": mean_pairwise_distance(self._class_rows("q", k)),
            "feature_intra_distance": mean_pairwise_distance(self._class_rows("h", k)),
            "effective_rank": effective_rank_from_gram(self._gram(k)),
        }

    def compute(self) -> SoftLabelStats:
        """The per-class and overall statistics of everything fed so far."""
        nan = float("nan")
        present = [k for k in range(self.num_classes) if self.count[k] > 0]
        per_class = [self._class_stats(k) for k in range(self.num_classes)]
        examples = {k: self._class_rows("p", k)[: self.max_examples].clone() for k in present}

        rows = [per_class[k] for k in present]
        total = int(self.count.sum())
        overall: dict[str, float] = {
            "samples": total,
            "classes": len(present),
            "accuracy": 100.0 * self.correct.sum().item() / total if total else nan,
        }
        sample_means = {"target_prob": "target", "entropy": "ent", "entropy_nontarget": "ent_nt"}
        for name, key in sample_means.items():
            overall[name] = self.sums[key].sum().item() / total if total else nan
        overall["nontarget_mass"] = 1.0 - overall["target_prob"]
        for name in CLASS_MEANS:
            overall[name] = _mean([r[name] for r in rows])

        counts = self.count[present].double().unsqueeze(1)
        p_means = self.p_sum[present] / counts
        h_means = self.h_sum[present] / counts  # relative to the shift
        enough = len(present) >= 2
        overall["inter_distance"] = mean_pairwise_distance(p_means) if enough else nan
        overall["feature_inter_distance"] = mean_pairwise_distance(h_means) if enough else nan
        overall["ratio"] = _ratio(overall["intra_distance"], overall["inter_distance"])
        overall["feature_ratio"] = _ratio(
            overall["feature_intra_distance"], overall["feature_inter_distance"]
        )
        overall["nc1"] = self._nc1(h_means, counts, total) if enough else nan
        return SoftLabelStats(self.temperature, overall, per_class, examples)

    def _nc1(self, h_means: Tensor, counts: Tensor, total: int) -> float:
        """tr(S_W S_B^+) / C from the present classes' shifted means (C', D) and counts (C', 1)."""
        # S_W = (sum_i h h^T - sum_c n_c mu_c mu_c^T) / N, all relative to the shift.
        s_w = (self.scatter - (h_means * counts).T @ h_means) / total
        centred = h_means - (h_means * counts).sum(0) / total  # around the global sample mean
        s_b = centred.T @ centred / h_means.shape[0]
        return torch.trace(s_w @ torch.linalg.pinv(s_b, hermitian=True)).item() / h_means.shape[0]
