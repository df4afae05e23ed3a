"""A safetensors file checked byte by byte: its header read with one open, or the whole file.

Every refusal is one line naming the file: missing, a folder, empty, a pickle, truncated, a
header that is not the JSON safetensors writes. The tensor data's digest (sha256 over the
bytes after the header) is what a checkpoint records to see damage the header cannot show.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError, UsageError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit; larger means corrupt
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container
PICKLE_MAGIC = b"\x80"  # a raw pickle (protocol 2 or later), the legacy torch.save format
FIX = "re-create it or use another checkpoint"


def check_path(path: Path) -> None:
    """Refuse a missing path or a folder (from its stat alone: no open)."""
    if not path.exists():
        raise UsageError(f"checkpoint {path} does not exist; check the path")
    if path.is_dir():
        hint = (
            " (did you mean DIR/model.safetensors?)"
            if (path / "model.safetensors").exists()
            else ""
        )
        raise UsageError(f"checkpoint {path} is a directory{hint}; pass a .safetensors file")


def header_length(path: Path, head: bytes, size: int) -> int:
    """The header's length from the file's first 9 bytes, after the checks they allow."""
    if size == 0:
        raise IcckdError(f"{path} is empty; {FIX}")
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
            f"truncated or of another format: {FIX}"
        )
    (n,) = struct.unpack("<Q", head[:8])
    if not json_at_8:
        raise IcckdError(
            f"{path} is not a safetensors file (no JSON header after the first 8 bytes); it "
            f"is corrupt or of another format: {FIX}"
        )
    if n > MAX_HEADER_BYTES:
        raise IcckdError(
            f"{path} claims a header of {n:,} bytes, over the {MAX_HEADER_BYTES:,}-byte limit; "
            f"it is corrupt: {FIX}"
        )
    if n + 8 > size:
        raise IcckdError(
            f"{path} is truncated: {size:,} bytes, while its header alone needs {n + 8:,}; {FIX}"
        )
    return int(n)


def parse_header(path: Path, raw: bytes, size: int) -> dict[str, Any]:
    """The header's JSON, refused where damaged or describing more bytes than the file has."""
    try:
        header = json.loads(raw)
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        need = 8 + len(raw) + max(ends, default=0)
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise TypeError("metadata")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise IcckdError(
            f"{path} has a damaged header (not the JSON safetensors writes); it is corrupt: {FIX}"
        ) from None
    if need > size:
        raise IcckdError(
            f"{path} is truncated: {size:,} bytes, while its header describes {need:,}; {FIX}"
        )
    return dict(header)


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """(the header's JSON, its length), with one open of the file and no tensor read."""
    check_path(path)
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        n = header_length(path, fh.read(9), size)
        fh.seek(8)
        return parse_header(path, fh.read(n), size), n


def read_whole(path: Path) -> tuple[bytes, dict[str, Any], int]:
    """(the file's bytes, its header's JSON, the header's length), with one open."""
    check_path(path)
    data = path.read_bytes()
    n = header_length(path, data[:9], len(data))
    return data, parse_header(path, data[8 : 8 + n], len(data)), n


def data_digest(data: bytes | bytearray, n: int) -> str:
    """sha256 of the tensor data: every byte after the 8-byte length and the n-byte header."""
    return hashlib.sha256(memoryview(data)[8 + n :]).hexdigest()
