"""The built-in corruption suite "icckd-builtin": 10 corruptions x 5 severities of a test split.

Not comparable with published CIFAR-10-C numbers: it is generated here, from the checkpoint's
own test split, with torch, torchvision and Pillow operations that approximate, not reproduce, the
CIFAR-10-C generation of Hendrycks & Dietterich ("Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019). What it shares with CIFAR-10-C are the
names and the severity constants, read from their CIFAR generation script
(github.com/hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py, commit 8190fe3):

| corruption       | constant per severity 1..5                          | meaning              |
|------------------|-----------------------------------------------------|----------------------|
| gaussian_noise   | 0.04, 0.06, 0.08, 0.09, 0.10                        | noise std (0..1)     |
| shot_noise       | 500, 250, 100, 75, 50                               | Poisson photons      |
| impulse_noise    | 0.01, 0.02, 0.03, 0.05, 0.07                        | salt-and-pepper share|
| speckle_noise    | 0.06, 0.10, 0.12, 0.16, 0.20                        | multiplicative std   |
| gaussian_blur    | 0.4, 0.6, 0.7, 0.8, 1.0                             | sigma (pixels)       |
| defocus_blur     | (0.3,0.4) (0.4,0.5) (0.5,0.6) (1,0.2) (1.5,0.1)     | disk radius, alias   |
| contrast         | 0.75, 0.5, 0.4, 0.3, 0.15                           | contrast kept        |
| brightness       | 0.05, 0.1, 0.15, 0.2, 0.3                           | added to HSV value   |
| pixelate         | 0.95, 0.9, 0.85, 0.75, 0.65                         | side kept            |
| jpeg_compression | 80, 65, 58, 50, 40                                  | JPEG quality         |

Where they differ: the random draws (torch's generator, not NumPy's), blur borders
(reflection here; torchvision's gaussian_blur for the Gaussian one), and values are rounded
to uint8 (they truncate). JPEG goes through Pillow at the given quality, as theirs did
(torchvision's JPEG codec is deprecated since 0.29). Pixelate resizes down and up with the
box filter as PIL defines it, to within one grey level (torchvision's tensor resize has no
box filter, and an area average blurs more at these small ratios). torchvision's
adjust_brightness multiplies and adjust_contrast pulls toward the grey mean, so those two
follow the definitions above instead (value + c in HSV; each channel's own mean).
The sigmas and radii are in pixels of 32x32 images; larger images get relatively milder blur.

Deterministic: each (corruption, severity) draws from its own torch.Generator on the CPU,
seeded from (seed, corruption, severity), so every checkpoint on every device sees the same
images, and a subset of corruptions does not change the others.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from icckd_cli.base.torchvision_check import check_torchvision

BUILTIN_SUITE = "icckd-builtin"
SEVERITIES = (1, 2, 3, 4, 5)
CHUNK = 1024  # images corrupted at a time; fixed, so the random draws do not depend on memory


@dataclass
class CorruptedBlock:
    """One corruption at one severity: uint8 images (N, 3, H, W) and int64 labels (N,)."""

    corruption: str
    severity: int
    images: Tensor
    labels: Tensor


Corruption = Callable[[Tensor, int, torch.Generator], Tensor]  # x (B, 3, H, W) in 0..1


def _gaussian_noise(x: Tensor, s: int, g: torch.Generator) -> Tensor:
    c = (0.04, 0.06, 0.08, 0.09, 0.10)[s - 1]
    return x + c * torch.randn(x.shape, generator=g)


def _shot_noise(x: Tensor, s: int, g: torch.Generator) -> Tensor:
    c = (500, 250, 100, 75, 50)[s - 1]
    return torch.poisson(x * c, generator=g) / c


def _impulse_noise(x: Tensor, s: int, g: torch.Generator) -> Tensor:
    c = (0.01, 0.02, 0.03, 0.05, 0.07)[s - 1]
    hit = torch.rand(x.shape, generator=g) <= c  # each channel value on its own, as s&p noise
    salt = torch.rand(x.shape, generator=g) <= 0.5
    return torch.where(hit, salt.to(x.dtype), x)


def _speckle_noise(x: Tensor, s: int, g: torch.Generator) -> Tensor:
    c = (0.06, 0.10, 0.12, 0.16, 0.20)[s - 1]
    return x + x * c * torch.randn(x.shape, generator=g)


def _gaussian_blur(x: Tensor, s: int, g: torch.Generator) -> Tensor:
    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[s - 1]
    k = 2 * int(4 * sigma + 0.5) + 1  # truncated at 4 sigma, as scikit-image's filter
    check_torchvision()  # imported here: the rest of the suite, and its callers, need none
    import torchvision.transforms.v2.functional as TF

    return TF.gaussian_blur(x, [k, k], [sigma, sigma])


def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """A normalised disk of `radius` pixels smoothed by a 3x3 Gaussian of `alias_blur`: (K, K)."""
    r = math.ceil(radius) + 1  # one ring of zeros for the smoothing to spread into
    grid = torch.arange(-r, r + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).double()
    disk /= disk.sum()
    g1 = torch.exp(-(torch.arange(-1.0, 2.0, dtype=torch.float64) ** 2) / (2 * alias_blur**2))
    g1 /= g1.sum()
    smooth = (g1[:, None] * g1[None, :])[None, None]
    return F.conv2d(disk[None, None], smooth, padding=1)[0, 0].float()


def _defocus_blur(x: Tensor, s: int, g: torch.Generator) -> Tensor:
    radius, alias = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))[s - 1]
    kernel = disk_kernel(radius, alias)
    k = kernel.shape[-1] // 2
    c = x.shape[1]
    padded = F.pad(x, (k, k, k, k), mode="reflect")
    return F.conv2d(padded, kernel.expand(c, 1, -1, -1).to(x.dtype), groups=c)


def _contrast(x: Tensor, s: int, g: torch.Generator) -> Tensor:
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[s - 1]
    mean = x.mean(dim=(2, 3), keepdim=True)  # per image and channel
    return (x - mean) * c + mean


def _brightness(x: Tensor, s: int, g: torch.Generator) -> Tensor:
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[s - 1]
    # in HSV, value = max(r, g, b) and r, g, b scale with it at fixed hue and saturation;
    # a black pixel (value 0) has no hue and becomes the grey of the new value
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * (v_new / v.clamp_min(1e-12)), v_new.expand_as(x))


def box_matrix(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) weights of a box-filter resize along one axis, as PIL's BOX resamples.

    Output pixel o averages, with equal weights, the input pixels whose centres lie within
    half an output pixel (half an input pixel when enlarging) of its centre: when enlarging
    that is one pixel, a nearest-neighbour copy, which is what makes pixelation blocky.
    """
    scale = n_in / n_out
    reach = max(scale, 1.0)
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        centre = (o + 0.5) * scale
        lo, hi = max(int(centre - reach / 2 + 0.5), 0), min(int(centre + reach / 2 + 0.5), n_in)
        for i in range(lo, hi):
            if -0.5 <= (i + 0.5 - centre) / reach < 0.5:
                w[o, i] = 1.0
    return (w / w.sum(dim=1, keepdim=True)).float()


def box_resize(x: Tensor, h: int, w: int) -> Tensor:
    """Images (B, C, H, W) -> (B, C, h, w) by the box filter, one axis after the other."""
    return box_matrix(x.shape[-2], h) @ x @ box_matrix(x.shape[-1], w).T


def _pixelate(x: Tensor, s: int, g: torch.Generator) -> Tensor:
    c = (0.95, 0.9, 0.85, 0.75, 0.65)[s - 1]
    h, w = x.shape[-2:]
    return box_resize(box_resize(x, int(h * c), int(w * c)), h, w)


def _jpeg_compression(x: Tensor, s: int, g: torch.Generator) -> Tensor:
    quality = (80, 65, 58, 50, 40)[s - 1]
    out = []
    for im in to_uint8(x).permute(0, 2, 3, 1).numpy():  # (H, W, 3) each
        buffer = io.BytesIO()
        Image.fromarray(im).save(buffer, "JPEG", quality=quality)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "defocus_blur": _defocus_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}


def to_unit(images: Tensor) -> Tensor:
    """uint8 (0..255) or float (0..1) images (B, 3, H, W) -> float32 on the CPU, 0..1."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
    x = images.detach().cpu()
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float().clamp(0, 1)


def to_uint8(x: Tensor) -> Tensor:
    """float (B, 3, H, W) in 0..1 -> uint8, clipped and rounded."""
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


def corruption_seed(seed: int, corruption: str, severity: int) -> int:
    """The generator seed of one (corruption, severity): stable across processes and runs."""
    return zlib.crc32(f"{BUILTIN_SUITE}/{seed}/{corruption}/{severity}".encode())


def corrupt(images: Tensor, corruption: str, severity: int, seed: int = 0) -> Tensor:
    """A whole batch (N, 3, H, W), uint8 or float 0..1, under one corruption: uint8 on the CPU."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity} is not one of 1..5")
    x = to_unit(images)
    g = torch.Generator().manual_seed(corruption_seed(seed, corruption, severity))
    fn = CORRUPTIONS[corruption]
    out = [to_uint8(fn(x[i : i + CHUNK], severity, g)) for i in range(0, len(x), CHUNK)]
    return torch.cat(out) if out else torch.empty(x.shape, dtype=torch.uint8)


def builtin_suite(
    images: Tensor, labels: Tensor, seed: int = 0, corruptions: Sequence[str] | None = None
) -> Iterator[CorruptedBlock]:
    """Every (corruption, severity) of the built-in suite, one block at a time, in order."""
    names = list(CORRUPTIONS) if corruptions is None else list(corruptions)
    labels = labels.detach().cpu().long()
    for name in names:
        for severity in SEVERITIES:
            yield CorruptedBlock(name, severity, corrupt(images, name, severity, seed), labels)
