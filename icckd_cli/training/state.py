"""The resumable training state: what state.safetensors holds, written and read back.

Weights, the objective's own state (heads, the queue, CRD memory), the optimiser's
momentum and the random generators, so a resumed run continues bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from icckd_cli.base.checkpoint import Checkpoint, save_tensors
from icckd_cli.base.errors import UsageError
from icckd_cli.models.loading import load_state_strict
from icckd_cli.training.engine import TrainState
from icckd_cli.training.objectives import Objective
from icckd_cli.training.rundir import STATE_FILE, writing


def state_tensors(
    model: nn.Module, objective: Objective, opt: torch.optim.Optimizer
) -> dict[str, Tensor]:
    """Every tensor a resumed run needs, under model/, objective/, optim/ and rng/ keys."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"objective/{k}": v for k, v in objective.state_dict().items()})
    for i, s in opt.state_dict()["state"].items():
        for name, v in s.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{i}/{name}"] = v
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    return tensors


def save_state(
    out: Path,
    st: TrainState,
    model: nn.Module,
    objective: Objective,
    opt: torch.optim.Optimizer,
    run: dict[str, Any],
    extra_meta: dict[str, Any],
) -> None:
    """Write out/state.safetensors; `run` is the arch, num_classes and config of the run."""
    meta = {
        "kind": "state",
        **run,
        "extra": st.__dict__,
        **extra_meta,  # the teacher's hash, checked on resume
    }
    with writing(out, STATE_FILE):
        save_tensors(out / STATE_FILE, state_tensors(model, objective, opt), meta)


def restore_state(
    out: Path,
    model: nn.Module,
    objective: Objective,
    opt: torch.optim.Optimizer,
    extra_meta: dict[str, Any],
) -> TrainState:
    """Load an interrupted run's state into the freshly built modules; returns where it was."""
    path = out / STATE_FILE
    ckpt = Checkpoint.read(path)  # one read; its tensor data verified before anything is used
    meta = ckpt.meta
    then = (meta.get("teacher") or {}).get("sha256")
    now = (extra_meta.get("teacher") or {}).get("sha256")
    if then and now and then != now:
        raise UsageError(
            f"the teacher {extra_meta['teacher']['path']} changed since this run was "
            "interrupted; put the original back, or start afresh with --overwrite"
        )
    t = ckpt.tensors()
    sub = {k[6:]: v for k, v in t.items() if k.startswith("model/")}
    load_state_strict(model, sub, str(path))
    objective.load_state_dict({k[10:]: v for k, v in t.items() if k.startswith("objective/")})
    osd = opt.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for k, v in t.items():
        if k.startswith("optim/"):
            _, i, name = k.split("/")
            state.setdefault(int(i), {})[name] = v
    osd["state"] = state
    opt.load_state_dict(osd)
    torch.set_rng_state(t["rng/torch"])
    if "rng/cuda" in t and torch.cuda.is_available():
        torch.cuda.set_rng_state(t["rng/cuda"])
    return TrainState(**meta["extra"])
