"""Where a run computes: the device it asks for, channels-last, cuDNN tuning, autocast."""

from __future__ import annotations

import contextlib

import torch

from icckd_cli.base.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, mps or cpu; an unavailable device is a one-line error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise UsageError(f"--device {name}: Apple's MPS is not available here; use --device cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} asked for CUDA but none is available; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(
            f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices"
        )
    return dev


def channels_last_on(device: torch.device, wanted: bool) -> bool:
    """Whether models run channels-last: where the run asks for it, except on Apple's MPS."""
    return wanted and device.type != "mps"


def tune_backends(device: torch.device) -> None:
    """On CUDA, cuDNN picks the fastest convolutions per shape unless determinism is on."""
    # training's shapes are fixed (batch and image size; the last batch and evaluation add
    # one or two), so timing the algorithms once per shape is repaid within the first epoch;
    # the config has no determinism option, so honour the process-wide switches
    if device.type != "cuda":
        return
    if torch.are_deterministic_algorithms_enabled() or torch.backends.cudnn.deterministic:
        return
    torch.backends.cudnn.benchmark = True


def effective_precision(device: torch.device, precision: str) -> str:
    """What "auto" means on a device: bf16 on CUDA, fp32 elsewhere; other values as given."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA by default; fp32 elsewhere unless asked."""
    precision = effective_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
