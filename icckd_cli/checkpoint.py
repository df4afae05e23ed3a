"""safetensors checkpoints with typed JSON metadata, atomic writes, `.pth` imports.

The header holds everything needed to describe and rebuild a model without loading its
tensors or guessing: format version, kind, architecture, classes, data set and its
normalisation, the resolved config, metrics, seed and versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from icckd_cli import __version__
from icckd_cli.errors import IcckdError, UsageError

if TYPE_CHECKING:
    from icckd_cli.models import ZooModel

FORMAT = "icckd"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit; larger means corrupt
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container
PICKLE_MAGIC = b"\x80"  # a raw pickle (protocol 2 or later), the legacy torch.save format
JSON_FIELDS = (
    "dataset", "config", "metrics", "versions", "teacher", "objective", "extra", "source",
    "model_args",
)  # fmt: skip


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp (and safetensors, which replaces the file) make 0600: use the usual mode
        os.chmod(tmp, 0o666 & ~_umask())
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it, so set it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Atomically replace a text file."""

    def write(p: Path) -> None:
        p.write_text(text)

    atomic_write(path, write)


def versions() -> dict[str, str]:
    """Versions recorded in every checkpoint."""
    return {"icckd": __version__, "torch": torch.__version__}


def encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """Metadata values as the strings safetensors stores (JSON for structured ones)."""
    out = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    for key, value in meta.items():
        out[key] = json.dumps(value) if key in JSON_FIELDS else str(value)
    return out


def decode_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """Inverse of encode_metadata."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in JSON_FIELDS:
            out[key] = json.loads(value)
        elif key in ("num_classes", "seed", "format_version"):
            out[key] = int(value)
        else:
            out[key] = value
    return out


def save_tensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Atomically save tensors with icckd metadata."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(clean, str(p), metadata=encode_metadata(meta)))


def save_model(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Save a model's state dict; `meta` needs kind, arch, num_classes, dataset, config."""
    meta = {**meta, "versions": versions()}
    save_tensors(path, dict(model.state_dict()), meta)


def _check_file(path: Path) -> None:
    """Reject a missing, truncated or non-safetensors file with one clear line."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"checkpoint {path} does not exist; check the path")
    if path.is_dir():
        hint = (
            " (did you mean DIR/model.safetensors?)"
            if (path / "model.safetensors").exists()
            else ""
        )
        raise UsageError(f"checkpoint {path} is a directory{hint}; pass a .safetensors file")
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(9)  # the header's length (u64, little-endian), then its JSON's '{'
    if size == 0:
        raise IcckdError(f"{path} is empty; re-create it or use another checkpoint")
    # a header length of 0x..80 bytes also starts with the pickle byte: a JSON '{' (or its
    # space padding) at byte 8 says safetensors, whatever the first byte is
    json_at_8 = head[8:9] in (b"{", b" ")
    if not json_at_8 and (head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_MAGIC)):
        raise IcckdError(
            f"{path} is a PyTorch pickle (.pth) file, not safetensors; name it .pth and use "
            "it as a teacher with --teacher FILE.pth --teacher-arch NAME"
        )
    if len(head) < 9:
        raise IcckdError(
            f"{path} is too short ({size} bytes) to be a safetensors checkpoint; it is "
            "truncated or of another format: re-create it or use another checkpoint"
        )
    (n,) = struct.unpack("<Q", head[:8])
    if not json_at_8:
        raise IcckdError(
            f"{path} is not a safetensors file (no JSON header after the first 8 bytes); it "
            "is corrupt or of another format: re-create it or use another checkpoint"
        )
    if n > MAX_HEADER_BYTES:
        raise IcckdError(
            f"{path} claims a header of {n:,} bytes, over the {MAX_HEADER_BYTES:,}-byte limit; "
            "it is corrupt: re-create it or use another checkpoint"
        )
    if n + 8 > size:
        raise IcckdError(
            f"{path} is truncated: {size:,} bytes, while its header alone needs {n + 8:,}; "
            "re-create it or use another checkpoint"
        )
    with path.open("rb") as fh:
        fh.seek(8)
        raw = fh.read(n)
    try:
        header = json.loads(raw)
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        need = 8 + n + max(ends, default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise IcckdError(
            f"{path} has a damaged header (not the JSON safetensors writes); it is corrupt: "
            "re-create it or use another checkpoint"
        ) from None
    if need > size:
        raise IcckdError(
            f"{path} is truncated: {size:,} bytes, while its header describes {need:,}; "
            "re-create it or use another checkpoint"
        )


def _first_line(exc: BaseException) -> str:
    """An exception's message cut to one line, for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_metadata(path: Path) -> dict[str, Any]:
    """The decoded metadata of an icckd checkpoint, without loading its tensors."""
    _check_file(path)
    try:
        with safe_open(str(path), "pt") as fh:
            raw = fh.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt file
        raise IcckdError(
            f"{path} is damaged or truncated ({_first_line(exc)}); re-create it or use "
            "another checkpoint"
        ) from None
    if raw.get("format") != FORMAT:
        raise IcckdError(
            f"{path} has no icckd metadata (format, arch, classes); it was not written by "
            "icckd. For a published .pth teacher use --teacher FILE.pth --teacher-arch NAME"
        )
    version = int(raw.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise IcckdError(
            f"{path} has checkpoint format {version}, newer than this icckd reads "
            f"({FORMAT_VERSION}); upgrade icckd"
        )
    try:
        return decode_metadata(raw)
    except (json.JSONDecodeError, ValueError):
        raise IcckdError(f"{path} has damaged metadata; re-create the checkpoint") from None


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """All tensors of a checkpoint, after the header checks."""
    _check_file(path)
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # noqa: BLE001
        raise IcckdError(
            f"{path} is damaged or truncated ({_first_line(exc)}); re-create it or use "
            "another checkpoint"
        ) from None


def weights_hash(state: dict[str, Tensor]) -> str:
    """sha256 over the sorted tensors' names and bytes: identifies a teacher's weights."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_model(
    path: Path,
    device: str | torch.device = "cpu",
    expect_arch: str | None = None,
    option: str = "--arch",
) -> tuple[ZooModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint's metadata alone and load its weights strictly.

    `expect_arch`, when given, must match the recorded architecture; `option` is the
    command-line option that asked for it, named in the error. The builder arguments
    recorded (`model_args`) rebuild exactly the model that was saved.
    """
    from icckd_cli.models import create_model, resolve_name

    meta = read_metadata(path)
    if meta.get("kind") == "state":
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
    model = create_model(meta["arch"], meta["num_classes"], **(meta.get("model_args") or {}))
    state = load_tensors(path)
    load_state_strict(model, state, str(path))
    return model.to(device), meta


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
) -> ZooModel:
    """Build `arch` and load a published `.pth` teacher into it strictly.

    `option` names the command-line option that gives the architecture (None: the
    command has none, so a `.pth` file cannot be used there). A weights file records no
    builder arguments: the library's defaults apply, with `model_args` over them. A
    safetensors file without icckd metadata (a timm or Hugging Face file) is read the same way.
    """
    from icckd_cli.models import create_model

    if arch is None:
        if option is None:
            raise UsageError(
                f"{path} is a .pth file without metadata, which this command cannot read; "
                "use it as a teacher with distill --teacher FILE.pth --teacher-arch NAME"
            )
        raise UsageError(
            f"{path} is a .pth file without metadata; say what it holds with {option} NAME"
        )
    state = read_pth_state(path) if Path(path).suffix != ".safetensors" else load_tensors(path)
    if num_classes is None:
        num_classes = head_classes(state, arch)
    model = create_model(arch, num_classes, **(model_args or {}))
    load_state_strict(model, state, str(path))
    return model


def head_classes(state: dict[str, Tensor], arch: str) -> int:
    """The number of classes a state dict predicts: the rows of its classifier's weight."""
    from icckd_cli.models.registry import probe_model

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


def is_icckd_file(path: Path) -> bool:
    """Whether a safetensors file carries icckd metadata (a foreign one holds weights only)."""
    _check_file(path)
    try:
        with safe_open(str(path), "pt") as fh:
            return (fh.metadata() or {}).get("format") == FORMAT
    except Exception:  # noqa: BLE001 - damaged: read_metadata says so in its own words
        return True


def load_any_model(
    path: Path,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    option: str | None = "--teacher-arch",
    model_args: dict[str, Any] | None = None,
) -> tuple[ZooModel, dict[str, Any]]:
    """A model from our checkpoint, or from a weights file (`.pth`, or safetensors without
    icckd metadata, given with `arch`); metadata is {} for a weights file.

    `option` is the command-line option that gave `arch`, named in errors (None: none);
    `model_args` are the builder arguments of a weights file (ours record their own, and
    are rebuilt from those).
    """
    path = Path(path)
    foreign = path.suffix in (".pth", ".pt") or (
        arch is not None and path.suffix == ".safetensors" and not is_icckd_file(path)
    )
    if foreign:
        return load_pth_model(path, arch, option=option, model_args=model_args).to(device), {}
    return load_model(path, device, expect_arch=arch, option=option or "--arch")
