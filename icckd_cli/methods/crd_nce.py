"""CRD's heads, memory banks and NCE loss (the nn.Module the crd term trains beside the model).

Tian, Krishnan and Isola, "Contrastive Representation Distillation", ICLR 2020; the method's
settings and registration are in crd.py, which imports this module only when CRD runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# keeps the NCE ratios away from log(0), the value the CRD paper's code uses
_NCE_EPS = 1e-7


def nce_criterion(p: Tensor, n_data: int) -> Tensor:
    """NCE loss, noise distribution 1/n_data, column 0 the positive: (B, K+1) -> ()."""
    k = p.shape[1] - 1
    noise = k / n_data  # K * P_noise
    log_d1 = torch.log(p[:, 0] / (p[:, 0] + noise + _NCE_EPS))
    log_d0 = torch.log(noise / (p[:, 1:] + noise + _NCE_EPS))
    return -(log_d1.sum() + log_d0.sum()) / p.shape[0]


class CRDLoss(nn.Module):
    """Two linear heads, one memory bank per side, symmetric NCE: f_s (B, S), f_t (B, T) -> ()."""

    memory_s: Tensor  # (n_data, feat_dim) bank of student embeddings
    memory_t: Tensor  # (n_data, feat_dim) bank of teacher embeddings
    z_s: Tensor
    z_t: Tensor

    def __init__(
        self,
        s_dim: int,
        t_dim: int,
        n_data: int,
        *,
        feat_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        momentum: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if n_data < 2:
            raise ValueError("CRD needs at least two training samples to draw negatives from")
        self.embed_s = nn.Linear(s_dim, feat_dim)
        self.embed_t = nn.Linear(t_dim, feat_dim)
        self.n_data = n_data
        self.nce_k = min(nce_k, n_data - 1)
        self.nce_t = nce_t
        self.momentum = momentum
        self.generator = generator
        init_gen = generator if generator is not None and generator.device.type == "cpu" else None
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        for name in ("memory_s", "memory_t"):
            bank = torch.rand(n_data, feat_dim, generator=init_gen) * (2 * stdv) - stdv
            self.register_buffer(name, bank)
        # negative means "not yet estimated": set once from the first batch, then frozen
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))

    def sample_contrast(self, index: Tensor) -> Tensor:
        """Positive index then nce_k uniform draws from the other indices: (B,) -> (B, K+1)."""
        gen = self.generator
        device = gen.device if gen is not None else index.device
        shape = (index.shape[0], self.nce_k)
        r = torch.randint(0, self.n_data - 1, shape, generator=gen, device=device)
        r = r.to(index.device)
        # shifting draws at or above the positive skips it and keeps the others uniform
        negatives = r + (r >= index[:, None]).long()
        return torch.cat([index[:, None], negatives], dim=1)

    def _scores(self, anchor: Tensor, memory: Tensor, idx: Tensor) -> Tensor:
        """exp(<memory[idx], anchor> / T): (B, F), (n_data, F), (B, K+1) -> (B, K+1)."""
        if self.n_data <= idx.shape[1] * anchor.shape[1]:
            # scoring the whole bank is cheaper than gathering B x (K+1) x F rows; the copy
            # is what backward reads, since the bank is updated in place after the scores
            dots = (anchor @ memory.clone().T).gather(1, idx)
        else:
            dots = torch.bmm(memory[idx], anchor[:, :, None]).squeeze(2)
        return torch.exp(dots / self.nce_t)

    def _normalised(self, out: Tensor, z: Tensor) -> Tensor:
        """Divide by Z, estimating Z = mean(out) * n_data on first use without a host sync."""
        z_new = torch.where(z < 0, out.detach().mean() * self.n_data, z)
        z.copy_(z_new)
        return out / z_new

    def forward(
        self, f_s: Tensor, f_t: Tensor, index: Tensor, contrast_idx: Tensor | None = None
    ) -> Tensor:
        """CRD loss; index (B,) are dataset indices, contrast_idx (B, K+1) starts with them."""
        e_s = F.normalize(self.embed_s(f_s.flatten(1)), dim=1)  # (B, F)
        e_t = F.normalize(self.embed_t(f_t.detach().flatten(1)), dim=1)  # (B, F)
        index = index.to(e_s.device).long()
        idx = self.sample_contrast(index) if contrast_idx is None else contrast_idx.long()
        idx = idx.to(e_s.device)
        mem_s, mem_t = self.memory_s.to(e_s.dtype), self.memory_t.to(e_s.dtype)
        # each side's anchor is contrasted with the other side's bank
        p_s = self._normalised(self._scores(e_s, mem_t, idx), self.z_s)
        p_t = self._normalised(self._scores(e_t, mem_s, idx), self.z_t)
        loss = nce_criterion(p_s, self.n_data) + nce_criterion(p_t, self.n_data)
        with torch.no_grad():
            for bank, emb in ((self.memory_s, e_s), (self.memory_t, e_t)):
                new = emb.detach().to(bank.dtype)
                mixed = bank[index] * self.momentum + new * (1 - self.momentum)
                bank.index_copy_(0, index, F.normalize(mixed, dim=1))
        return loss
