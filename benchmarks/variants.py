"""Proposed replacements for parts of `icckd_cli`, timed and checked against the current code.

Nothing here is imported by the package: each function is a candidate change that the
benchmark measures beside the code it would replace (same inputs, same outputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def augment_two_gathers(
    images: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, padding: int
) -> Tensor:
    """data.augment as two gathers (rows, then flipped-or-not columns): same output.

    images (B, C, H, W) uint8; dy, dx (B,); flip (B,) bool.
    """
    b, c, h, w = images.shape
    if not padding:
        return torch.where(flip[:, None, None, None], images.flip(-1), images)
    padded = F.pad(images, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
    rows = dy[:, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=images.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(-1), cols)
    x = padded.gather(2, rows[:, None, :, None].expand(b, c, h, padded.shape[3]))  # (B, C, H, W+2p)
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))  # (B, C, H, W)


def normalize_fused(
    images: Tensor, mean: Tensor, std: Tensor, channels_last: bool = False
) -> Tensor:
    """data.normalize with the layout change done on uint8 and one multiply-add in float."""
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)  # 1 byte per value
    return torch.addcmul(-mean / std, images.float(), 1.0 / (255.0 * std))
