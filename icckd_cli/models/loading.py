"""Models rebuilt from checkpoints: icckd safetensors files and published `.pth` weights."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from icckd_cli.base.checkpoint import Checkpoint
from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.models import create_model, resolve_name
from icckd_cli.models.registry import probe_model

if TYPE_CHECKING:
    from icckd_cli.models import ZooModel


def model_from_checkpoint(
    ckpt: Checkpoint,
    device: str | torch.device = "cpu",
    expect_arch: str | None = None,
    option: str = "--arch",
) -> ZooModel:
    """The model an icckd checkpoint describes, its weights loaded strictly.

    `expect_arch`, when given, must match the recorded architecture; `option` is the
    command-line option that asked for it, named in the error. The builder arguments
    recorded (`model_args`) rebuild exactly the model that was saved.
    """
    path, meta = ckpt.path, ckpt.meta
    if ckpt.kind == "state":
        raise UsageError(
            f"{path} is the resumable state of an unfinished run, not a model; finish the run "
            f"with --resume {Path(path).parent} and use its model.safetensors"
        )
    for key in ("arch", "num_classes"):
        if key not in meta:
            raise IcckdError(f"{path} lacks '{key}' in its metadata; re-create the checkpoint")
    if expect_arch is not None and resolve_name(expect_arch) != resolve_name(meta["arch"]):
        raise UsageError(
            f"{path} holds a {meta['arch']}, not the {expect_arch} asked for with {option}; "
            f"pass {option} {meta['arch']} or another checkpoint"
        )
    model = create_model(meta["arch"], meta["num_classes"], **ckpt.model_args)
    load_state_strict(model, ckpt.tensors(), str(path))
    return model.to(device)


def load_state_strict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """load_state_dict(strict=True) with a one-line message on any mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        first = (missing + unexpected + wrong)[0]
        if first in wrong:
            first += f": {tuple(state[first].shape)} in the file, {tuple(own[first].shape)} here"
        detail = (
            f"{len(missing)} missing keys, {len(unexpected)} unexpected, {len(wrong)} of another "
            f"shape (e.g. {first})"
        )
        arch = getattr(model, "arch", type(model).__name__)
        fix = "check the architecture and the number of classes"
        if ":" in arch:  # a library's model: its shapes also follow the builder arguments
            fix += (
                " and the builder arguments the weights were made with (--model-arg, or "
                "--teacher-model-arg for a teacher, e.g. img_size=32)"
            )
        raise IcckdError(
            f"{source} does not fit a {arch} with "
            f"{getattr(model, 'num_classes', '?')} classes: {detail}; {fix}"
        )
    model.load_state_dict(state, strict=True)


def read_pth_state(path: Path) -> dict[str, Tensor]:
    """A published `.pth` state dict, read without unpickling code (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"teacher file {path} does not exist; check the path")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # damaged, not merely foreign
            raise IcckdError(
                f"{path} is not a readable PyTorch .pth file (damaged or of another format); "
                "check the file"
            ) from None
        raise IcckdError(
            f"{path} holds pickled Python objects besides tensors; icckd never unpickles code "
            "from a file (weights_only=True): save a plain state dict (model.state_dict())"
        ) from None
    except Exception:  # noqa: BLE001 - a damaged zip, a truncated pickle, another format
        raise IcckdError(
            f"{path} is not a readable PyTorch .pth file (damaged or of another format); "
            "check the file"
        ) from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # the CRD zoo wraps its state dict as {'model': ..., 'epoch': ...}
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise IcckdError(f"{path} does not hold a state dict of tensors; it is not a teacher")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_pth_model(
    path: Path,
    arch: str | None,
    num_classes: int | None = None,
    option: str | None = "--teacher-arch",
    model_args: dict[str, Any] | None = None,
    state: dict[str, Tensor] | None = None,
) -> ZooModel:
    """Build `arch` and load a published `.pth` teacher (or `state`, read already) strictly.

    `option` names the command-line option that gives the architecture (None: the
    command has none, so a `.pth` file cannot be used there). A weights file records no
    builder arguments: the library's defaults apply, with `model_args` over them. A
    safetensors file without icckd metadata (a timm or Hugging Face file) is read the same way.
    """
    if arch is None:
        if option is None:
            raise UsageError(
                f"{path} is a .pth file without metadata, which this command cannot read; "
                "use it as a teacher with distill --teacher FILE.pth --teacher-arch NAME"
            )
        raise UsageError(
            f"{path} is a .pth file without metadata; say what it holds with {option} NAME"
        )
    if state is None:
        state = read_pth_state(path)
    if num_classes is None:
        num_classes = head_classes(state, arch)
    model = create_model(arch, num_classes, **(model_args or {}))
    load_state_strict(model, state, str(path))
    return model


def head_classes(state: dict[str, Tensor], arch: str) -> int:
    """The number of classes a state dict predicts: the rows of its classifier's weight."""
    if ":" in arch:  # a library's model: its classifier's key, found on the meta device
        key = _classifier_key(probe_model(arch, 7))
        if key in state and state[key].dim() == 2:
            return int(state[key].shape[0])
    heads = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(heads[-1].shape[0]) if heads else 100


def _classifier_key(model: nn.Module) -> str:
    """The state-dict key of the linear layer with 7 outputs (the probe's head)."""
    names = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == 7
    ]
    return f"{names[-1]}.weight" if names else ""


def open_any_model(
    path: Path,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    option: str | None = "--teacher-arch",
    model_args: dict[str, Any] | None = None,
) -> tuple[ZooModel, Checkpoint | None]:
    """A model from our checkpoint, or from a weights file (`.pth`, or safetensors without
    icckd metadata, given with `arch`), and the checkpoint it was read from (None: `.pth`).

    A safetensors file is read once, its tensor data verified. `option` is the command-line
    option that gave `arch`, named in errors (None: none); `model_args` are the builder
    arguments of a weights file (ours record their own, and are rebuilt from those).
    """
    path = Path(path)
    if path.suffix in (".pth", ".pt"):
        return load_pth_model(path, arch, option=option, model_args=model_args).to(device), None
    ckpt = Checkpoint.read(path)
    if arch is not None and path.suffix == ".safetensors" and not ckpt.is_icckd:
        state = ckpt.tensors()
        model = load_pth_model(path, arch, option=option, model_args=model_args, state=state)
        return model.to(device), ckpt
    return model_from_checkpoint(ckpt, device, expect_arch=arch, option=option or "--arch"), ckpt


def load_any_model(
    path: Path,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    option: str | None = "--teacher-arch",
    model_args: dict[str, Any] | None = None,
) -> tuple[ZooModel, dict[str, Any]]:
    """open_any_model's model and metadata ({} for a weights file)."""
    model, ckpt = open_any_model(path, arch, device, option, model_args)
    return model, ckpt.meta if ckpt is not None and ckpt.is_icckd else {}
