"""Process-group helpers for torchrun: identity functions when the process runs alone.

Every helper that communicates is a collective: all ranks must call it at the same point
of the run, which the engine guarantees by calling them at steps every rank reaches.
"""

from __future__ import annotations

import atexit
import functools
import gc
import itertools
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
import torch.distributed as tdist
from torch import Tensor, nn

from icckd_cli.base.errors import INTERRUPTED, Diverged, IcckdError, Interrupted

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
_CPU = torch.device("cpu")


class RankError(IcckdError):
    """The failure of one rank, reported once for the whole run: 'rank R: message'."""


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


def reports(exc: BaseException) -> bool:
    """Whether this process should print `exc`: rank 0, or the rank a failure came from."""
    if isinstance(exc, RankError) or not launched_by_torchrun():
        return True
    return os.environ.get("RANK", "0") == "0"


# ----------------------------------------------------------------------------- joining


def init_from_env() -> None:
    """Join the process group torchrun describes (NCCL for GPUs, gloo for CPUs); else nothing."""
    if not launched_by_torchrun() or is_distributed():
        return
    backend = "gloo"
    if torch.cuda.is_available():
        # CPU tensors (agreement flags, a --device cpu run) go through gloo, CUDA ones NCCL
        backend = "cpu:gloo,cuda:nccl"
        local = int(os.environ["LOCAL_RANK"])
        if local < torch.cuda.device_count():
            torch.cuda.set_device(local)
    tdist.init_process_group(backend=backend)
    atexit.register(destroy)


def destroy() -> None:
    """Leave the process group (at exit, so NCCL and gloo shut down cleanly).

    Trainers that ended inside reference cycles (a DDP wrapper, its reducer, hooks) would
    otherwise be freed during interpreter shutdown, after the group is gone, where gloo's
    worker threads abort the process ('terminate called without an active exception') and
    a finished run exits non-zero. Collecting them first frees them while all is alive.
    """
    gc.collect()
    if is_distributed():
        tdist.destroy_process_group()
    gc.collect()


def local_device(device: torch.device) -> torch.device:
    """Under torchrun on CUDA each process uses the GPU of its local rank."""
    if is_distributed() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


# ----------------------------------------------------------------------------- tensors


def all_gather_cat(t: Tensor) -> Tensor:
    """Concatenate a tensor's rows from every rank, in rank order (identity when alone)."""
    if not is_distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(world_size())]
    tdist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def gather_rows(t: Tensor) -> tuple[Tensor, Tensor]:
    """(all ranks' rows in rank order, the other ranks' rows), detached: (N, ...) -> (W*N, ...)
    and ((W-1)*N, ...). Other ranks' rows are constants here, as the queue's entries are."""
    t = t.detach()
    if not is_distributed():
        return t, t[:0]
    every = all_gather_cat(t)
    n, r = t.shape[0], rank()
    return every, torch.cat([every[: r * n], every[(r + 1) * n :]])


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average gradients over ranks in place (for trainable parts DDP does not wrap)."""
    # every rank builds the same graph, so the same parameters have gradients everywhere
    params = [p for p in params if p.grad is not None]
    if not is_distributed() or not params:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective, not one per tensor
    tdist.all_reduce(flat)
    flat /= world_size()
    for p, g in zip(params, flat.split([q.numel() for q in params]), strict=True):
        p.grad = g.view_as(p).to(p.dtype)


def broadcast_from_main(tensors: Iterable[Tensor]) -> None:
    """Overwrite these tensors with rank 0's values, so every rank starts alike."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in tensors:
            tdist.broadcast(t.data, src=0)


# ----------------------------------------------------------------------------- agreement


def any_rank(flag: bool) -> bool:
    """True on every rank once it is true on one (a stop request seen by one process)."""
    if not is_distributed():
        return flag
    t = torch.tensor([int(flag)], device=_CPU)  # CPU: a host value, no device sync
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


def first_flagged(marker: Tensor) -> tuple[int, list[int]]:
    """(rank, marker) of the earliest flagged rank; marker[0] < 0 means 'not flagged': (K,)."""
    values = marker.tolist()
    if not is_distributed():
        return 0, values
    every = all_gather_cat(marker.detach().to(_CPU, torch.long)[None]).tolist()  # (W, K)
    flagged = [(v[0], r) for r, v in enumerate(every) if v[0] >= 0]
    if not flagged:
        return rank(), values
    _, who = min(flagged)
    return who, every[who]


def barrier() -> None:
    """Wait until every rank got here (through gloo on the host: no device involved)."""
    any_rank(False)


def from_main(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) computed on rank 0 alone and handed to every rank, so all act on one answer."""
    if not is_distributed():
        return fn(*args)
    box: list[Any] = [fn(*args) if is_main() else None]
    tdist.broadcast_object_list(box, src=0, device=_CPU)
    return box[0]


# ----------------------------------------------------------------------------- failures


_runs = itertools.count()  # runs started in this process: the same sequence on every rank


def _first_to_fail(run: int) -> bool:
    """Whether this rank failed first in this run; a later failure is a consequence of it."""
    try:
        store = tdist.distributed_c10d._get_default_store()
        # one counter per run and torchrun restart, in the rendezvous store all ranks share
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return store.add(f"icckd/failures/{restart}/{run}", 1) == 1
    except Exception:  # store gone with its host: better two reports than none
        return True


def fail_together(fn: F) -> F:
    """Under torchrun, end every rank when one fails and report it once, naming the rank.

    Stops and divergence are agreed by all ranks, so rank 0 reports them; any other
    failure is reported by the rank it happened on, and the ranks left waiting for it
    (their collectives fail once its connections close) exit quietly with an error code.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        run = next(_runs)
        try:
            return fn(*args, **kwargs)
        except SystemExit:
            raise
        except BaseException as exc:
            if not is_distributed():
                raise
            if isinstance(exc, (Interrupted, Diverged, KeyboardInterrupt)):
                if is_main():
                    raise
                code = exc.exit_code if isinstance(exc, IcckdError) else INTERRUPTED
                raise SystemExit(code) from None
            code = exc.exit_code if isinstance(exc, IcckdError) else 1
            if not _first_to_fail(run):
                raise SystemExit(code) from None
            if isinstance(exc, IcckdError):
                raise RankError(f"rank {rank()}: {exc.message}", code) from None
            if hasattr(exc, "add_note"):  # Python 3.11+: the traceback names the rank
                exc.add_note(f"(raised on rank {rank()} of {world_size()})")
            raise

    return wrapper  # type: ignore[return-value]
