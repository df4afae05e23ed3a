"""Process-group helpers: identity functions when not launched by torchrun."""

from __future__ import annotations

import os

import torch
import torch.distributed as tdist
from torch import Tensor


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    """This process's rank (0 when alone)."""
    return tdist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when alone)."""
    return tdist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Only rank 0 writes files and prints."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK for each process."""
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def all_gather_cat(t: Tensor) -> Tensor:
    """Concatenate a tensor's rows from every rank, in rank order (identity when alone)."""
    if not is_distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    tdist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def local_device(device: torch.device) -> torch.device:
    """Under torchrun on CUDA each process uses the GPU of its local rank."""
    if is_distributed() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_from_env() -> None:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs); else nothing."""
    if not launched_by_torchrun() or is_distributed():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    tdist.init_process_group(backend=backend)
