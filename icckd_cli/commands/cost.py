"""What a model costs to run: parameters, stored size, multiply-accumulates, latency.

MACs are counted by `torch.utils.flop_counter.FlopCounterMode` on one image at the model's
input size; it counts two FLOPs per multiply-accumulate of the matrix products (convolution,
mm, addmm, bmm, baddbmm, scaled-dot-product attention: its CPU kernel added here) and
nothing for element-wise work (batch norm, ReLU, pooling, additions, softmax), which is also
what torchvision's published `_ops` figures count.
"""

from __future__ import annotations

import json
import statistics
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from icckd_cli.base.events import Callback

MB = 1e6  # size_mb is in megabytes of 10^6 bytes (not MiB)
WARMUP = 3  # untimed runs first: allocator, caches, cuDNN's algorithm search
REPS = 20  # timed runs; the median is reported
BUDGET_S = 2.0  # ...but slow models stop timing after this long (never under MIN_REPS runs)
MIN_REPS = 5
# `eval --latency`'s throughput batch unless --batch-size is given: a ViT-Tiny at 32x32
# (65 tokens) takes about a second a pass of 64 on 2 CPU cores, so the 3 + 5 or more passes
# take seconds; at the evaluation batch (512) they took 80 s
THROUGHPUT_BATCH = 64

Progress = Callback  # base/events.py: the one progress type


def _no_progress(event: str, info: dict[str, Any]) -> None:
    return None


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers excluded), as torchvision's `num_params` counts them."""
    return sum(p.numel() for p in model.parameters())


def _cpu_attention_flops(
    query_shape: tuple[int, ...],
    key_shape: tuple[int, ...],
    value_shape: tuple[int, ...],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of scaled-dot-product attention on the CPU, as torch counts the CUDA kernels."""
    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one (1, 3, S, S) image, S = image_size: FLOPs / 2."""
    # torch 2.14 counts the CUDA attention kernels but not the CPU one that
    # F.scaled_dot_product_attention runs here (timm's ViTs): without it a ViT's QK^T and
    # AV products would be missing from a count made on the CPU
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    mapping = {} if cpu_attention is None else {cpu_attention: _cpu_attention_flops}

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    was_training = model.training
    model.eval()
    try:
        counting = FlopCounterMode(display=False, custom_mapping=mapping)
        with torch.inference_mode(), counting as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def stored_bytes(path: Path) -> int:
    """Bytes of the tensors in a safetensors file (its header and metadata excluded)."""
    with Path(path).open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return sum(
        int(v["data_offsets"][1]) - int(v["data_offsets"][0])
        for k, v in header.items()
        if k != "__metadata__"
    )


def static_cost(model: nn.Module, image_size: int, path: Path | None = None) -> dict[str, Any]:
    """params, size_mb (the file's tensors; None without a file), macs at image_size."""
    return {
        "params": count_params(model),
        "size_mb": None if path is None else stored_bytes(path) / MB,
        "macs": count_macs(model, image_size),
        "image_size": image_size,
    }


def _median_seconds(
    run: Callable[[], object],
    sync: Callable[[], None],
    reps: int,
    shown: Callable[[int, int], None] = lambda done, total: None,
) -> tuple[float, int]:
    """(median wall time of `run`, timed runs made), after WARMUP untimed ones.

    shown(done, total) after each pass, warm-up included; total is WARMUP + reps, and the
    last call has done == total (the time budget may end the timing sooner).
    """
    total = WARMUP + reps
    for i in range(WARMUP):
        run()
        shown(i + 1, total)
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps:
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= MIN_REPS and time.perf_counter() - start > BUDGET_S:
            break
        if len(times) < reps:
            shown(WARMUP + len(times), total)
    shown(WARMUP + len(times), WARMUP + len(times))
    return statistics.median(times), len(times)


def measure_latency(
    model: nn.Module,
    image_size: int,
    device: torch.device,
    batch_size: int | None = None,
    channels_last: bool = False,
    reps: int = REPS,
    progress: Progress = _no_progress,
) -> dict[str, Any]:
    """latency_ms at batch 1 and throughput (images/s) at batch_size (None: not measured).

    Median of up to `reps` timed forward passes after a warm-up, in eval mode under
    inference_mode, float32, random (B, 3, S, S) inputs already on `device`. Each pass is
    reported as a 'latency' event: batch, done, total (passes, warm-up included).
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    was_training = model.training
    model.eval()

    def timed(batch: int) -> tuple[float, int]:
        x = torch.rand(batch, 3, image_size, image_size, device=device)
        x = x.contiguous(memory_format=fmt)

        def shown(done: int, total: int) -> None:
            progress("latency", {"batch": batch, "done": done, "total": total})

        with torch.inference_mode():
            return _median_seconds(lambda: model(x), sync, reps, shown)

    try:
        latency, n_latency = timed(1)
        throughput, n_throughput = None, 0
        if batch_size is not None:
            seconds, n_throughput = timed(batch_size)
            throughput = batch_size / seconds
    finally:
        model.train(was_training)
    return {
        "latency_ms": 1000.0 * latency,
        "throughput": throughput,
        "timing": {
            "device": _device_name(device),
            "threads": torch.get_num_threads(),
            "dtype": "float32",
            "memory_format": "channels_last" if channels_last else "contiguous",
            "batch_size": batch_size,
            "warmup": WARMUP,
            "reps": {"latency": n_latency, "throughput": n_throughput or None},
        },
    }


def _device_name(device: torch.device) -> str:
    """'cpu', or 'cuda (NVIDIA H200)': what the figures were measured on."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
