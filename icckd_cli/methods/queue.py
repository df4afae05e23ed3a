"""The per-class cache ("pipeline"): a fixed-size FIFO of recent embeddings for every class."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ClassQueue(nn.Module):
    """Per class, the last `size` L2-normalised detached embeddings; memory (C, K, D) + (C,)."""

    bank: Tensor
    pushed: Tensor

    def __init__(self, num_classes: int, size: int, dim: int) -> None:
        super().__init__()
        if num_classes < 1 or size < 0 or dim < 1:
            raise ValueError("ClassQueue needs num_classes >= 1, size >= 0 and dim >= 1")
        self.num_classes = num_classes
        self.size = size
        self.dim = dim
        self.register_buffer("bank", torch.zeros(num_classes, size, dim))  # (C, K, D)
        # embeddings ever pushed per class: gives both the write pointer and the fill level
        self.register_buffer("pushed", torch.zeros(num_classes, dtype=torch.long))  # (C,)

    @property
    def enabled(self) -> bool:
        """False when size is 0 (in-batch negatives only)."""
        return self.size > 0

    @torch.no_grad()
    def push(self, z: Tensor, labels: Tensor) -> None:
        """Enqueue embeddings in batch order, oldest entries overwritten: (N, D), (N,).

        No host-device sync (no bincount, no boolean mask): the i-th sample of class c in
        this batch goes to slot (pushed_c + i) % K. A class with more than K samples sends
        several to one slot, where the latest must win: every slot takes the row of the
        last sample that lands on it, and all samples landing there write that same row,
        so the order of the writes cannot matter and the result is deterministic.
        """
        if not self.enabled or z.shape[0] == 0:
            return
        c, k, d = self.bank.shape
        device = self.bank.device
        z = F.normalize(z.detach().to(device, self.bank.dtype), dim=1)  # (N, D)
        labels = labels.detach().to(device).long()  # (N,)
        position = torch.arange(labels.shape[0], device=device)  # (N,) batch order
        per_class = torch.zeros(c, dtype=torch.long, device=device)
        per_class.scatter_add_(0, labels, torch.ones_like(labels))  # (C,)
        # rank of each sample among its class in this batch: sorted position minus the
        # class's first sorted position (the stable sort keeps batch order within a class)
        order = torch.sort(labels, stable=True).indices  # (N,)
        start = torch.cumsum(per_class, 0) - per_class  # (C,)
        rank = torch.empty_like(labels).scatter_(0, order, position - start[labels[order]])
        slot = labels * k + (self.pushed[labels] + rank) % k  # (N,) into the flat (C*K) bank
        last = torch.full((c * k,), -1, dtype=torch.long, device=device)
        last.scatter_reduce_(0, slot, position, reduce="amax")  # (C*K,) latest writer per slot
        self.bank.view(c * k, d).index_copy_(0, slot, z[last[slot]])
        self.pushed += per_class

    def counts(self) -> Tensor:
        """Valid entries per class: (C,)."""
        return self.pushed.clamp(max=self.size)

    def contents(self) -> tuple[Tensor, Tensor]:
        """Valid entries, class by class and oldest first, with their labels: (M, D), (M,)."""
        device = self.bank.device
        if not self.enabled:
            return self.bank.new_zeros(0, self.dim), torch.zeros(0, dtype=torch.long, device=device)
        k = self.size
        count = self.counts()  # (C,)
        j = torch.arange(k, device=device)
        # slot of the j-th oldest entry: the pointer minus the fill level, plus j
        slot = (self.pushed[:, None] - count[:, None] + j[None, :]) % k  # (C, K)
        ordered = self.bank.gather(1, slot[:, :, None].expand(-1, -1, self.dim))  # (C, K, D)
        valid = j[None, :] < count[:, None]  # (C, K)
        classes = torch.arange(self.num_classes, device=device)[:, None].expand(-1, k)
        return ordered[valid], classes[valid]

    def padded(self) -> tuple[Tensor, Tensor]:
        """Every slot with its class, -1 where not filled yet: (C*K, D), (C*K,); no host sync.

        Slots fill in order 0, 1, ... before they wrap, so slot j of class c holds an entry
        exactly when j < min(pushed_c, K). A label of -1 matches no class, so empty slots
        never become negatives; the order of entries does not matter to the loss.
        """
        k, device = self.size, self.bank.device
        filled = torch.arange(k, device=device)[None, :] < self.counts()[:, None]  # (C, K)
        classes = torch.arange(self.num_classes, device=device)[:, None].expand(-1, k)
        labels = torch.where(filled, classes, torch.full_like(classes, -1))
        return self.bank.reshape(-1, self.dim), labels.reshape(-1)

    def extra_repr(self) -> str:
        """Shown by print(module)."""
        return f"num_classes={self.num_classes}, size={self.size}, dim={self.dim}"
