"""safetensors checkpoints with typed JSON metadata, atomic writes, `.pth` imports.

The header holds everything needed to describe and rebuild a model without loading its
tensors or guessing: format version, kind, architecture, classes, data set and its
normalisation, the resolved config, metrics, seed and versions.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from icckd_cli import __version__
from icckd_cli.base.atomic import atomic_write
from icckd_cli.base.errors import IcckdError, UsageError, first_line

FORMAT = "icckd"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit; larger means corrupt
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container
PICKLE_MAGIC = b"\x80"  # a raw pickle (protocol 2 or later), the legacy torch.save format
JSON_FIELDS = (
    "dataset", "config", "metrics", "versions", "teacher", "objective", "extra", "source",
    "model_args",
)  # fmt: skip


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


def check_file(path: Path) -> None:
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


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Read a file check_file passed: whatever safetensors then fails on is one damaged line."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt file
        raise IcckdError(
            f"{path} is damaged or truncated ({first_line(exc)}); re-create it or use "
            "another checkpoint"
        ) from None


def read_metadata(path: Path) -> dict[str, Any]:
    """The decoded metadata of an icckd checkpoint, without loading its tensors."""
    check_file(path)
    with reading(path), safe_open(str(path), "pt") as fh:
        raw = fh.metadata() or {}
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
    check_file(path)
    with reading(path):
        return load_file(str(path), device=str(device))


def weights_hash(state: dict[str, Tensor]) -> str:
    """sha256 over the sorted tensors' names and bytes: identifies a teacher's weights."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def is_icckd_file(path: Path) -> bool:
    """Whether a safetensors file carries icckd metadata (a foreign one holds weights only)."""
    check_file(path)
    try:
        with safe_open(str(path), "pt") as fh:
            return (fh.metadata() or {}).get("format") == FORMAT
    except Exception:  # noqa: BLE001 - damaged: read_metadata says so in its own words
        return True
