"""safetensors checkpoints with typed JSON metadata, a digest of their tensors, atomic writes.

The header holds everything needed to describe and rebuild a model without loading its
tensors or guessing: format version, kind, architecture, classes, data set and its
normalisation, the resolved config, metrics, seed and versions, and `data_sha256`, the
sha256 of the tensor data, which every reader checks before it uses a tensor. A
`Checkpoint` is a file opened once: its header, its tensors when asked, its hashes.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from icckd_cli import __version__
from icckd_cli.base.atomic import atomic_write
from icckd_cli.base.errors import IcckdError, UnverifiedCheckpoint, first_line
from icckd_cli.base.safetensors_file import FIX, data_digest, read_header, read_whole

FORMAT = "icckd"
FORMAT_VERSION = 1
DIGEST_KEY = "data_sha256"  # a metadata string; absent from files written before it
JSON_FIELDS = (
    "dataset", "config", "metrics", "versions", "teacher", "objective", "extra", "source",
    "model_args",
)  # fmt: skip
_PENDING = "0" * 63 + "x"  # the digest's stand-in while the data is serialised: same length


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
    """Inverse of encode_metadata (the digest is the file's, not the run's: left out)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == DIGEST_KEY:
            continue
        if key in JSON_FIELDS:
            out[key] = json.loads(value)
        elif key in ("num_classes", "seed", "format_version"):
            out[key] = int(value)
        else:
            out[key] = value
    return out


def checkpoint_bytes(tensors: dict[str, Tensor], meta: dict[str, Any]) -> bytearray:
    """A whole checkpoint file: the tensors serialised, their digest written into the header."""
    raw = {**encode_metadata(meta), DIGEST_KEY: _PENDING}
    data = bytearray(save_bytes(tensors, metadata=raw))
    n = int.from_bytes(data[:8], "little")
    at = data.find(_PENDING.encode(), 8, 8 + n)  # the header's one stand-in (JSON-quoted)
    data[at : at + len(_PENDING)] = data_digest(data, n).encode()
    return data


def save_tensors(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Atomically save tensors with icckd metadata and the digest of their data."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    data = checkpoint_bytes(clean, meta)

    def write(tmp: Path) -> None:
        Path(tmp).write_bytes(data)

    atomic_write(path, write)


def save_model(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Save a model's state dict; `meta` needs kind, arch, num_classes, dataset, config."""
    meta = {**meta, "versions": versions()}
    save_tensors(path, dict(model.state_dict()), meta)


@dataclass
class Checkpoint:
    """A safetensors file opened once per use: header metadata, tensors when asked, hashes.

    `open` reads the header alone; `read` reads the whole file once, checks the digest of
    its tensor data and deserialises the tensors from those bytes. `meta` is the decoded
    icckd metadata ({} for a foreign file: a published teacher's weights).
    """

    path: Path
    raw: dict[str, str]
    header_len: int
    _data: bytes | None = field(default=None, repr=False)
    _tensors: dict[str, Tensor] | None = field(default=None, repr=False)
    _weights_sha256: str | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Path) -> Checkpoint:
        """The header alone (one open): metadata, no tensor read."""
        header, n = read_header(Path(path))
        ckpt = cls(Path(path), header.get("__metadata__") or {}, n)
        ckpt._check_version()
        return ckpt

    @classmethod
    def read(cls, path: Path) -> Checkpoint:
        """The whole file (one open), its tensor data checked against the recorded digest."""
        data, header, n = read_whole(Path(path))
        ckpt = cls(Path(path), header.get("__metadata__") or {}, n, data)
        ckpt._check_version()
        ckpt._verify()
        return ckpt

    @property
    def is_icckd(self) -> bool:
        """Whether the file carries icckd metadata (a foreign one holds weights only)."""
        return self.raw.get("format") == FORMAT

    @cached_property
    def meta(self) -> dict[str, Any]:
        """The decoded icckd metadata (decoded once); refused in one line for a foreign file."""
        if not self.is_icckd:
            raise IcckdError(
                f"{self.path} has no icckd metadata (format, arch, classes); it was not written "
                "by icckd. For a published .pth teacher use --teacher FILE.pth --teacher-arch NAME"
            )
        try:
            return decode_metadata(self.raw)
        except (json.JSONDecodeError, ValueError):
            raise IcckdError(f"{self.path} has damaged metadata; {FIX}") from None

    def _field(self, key: str) -> dict[str, Any]:
        value = self.meta.get(key)
        return value if isinstance(value, dict) else {}

    @property
    def kind(self) -> str | None:
        """teacher, student, state (an unfinished run) or None."""
        return self.meta.get("kind")

    @property
    def arch(self) -> str | None:
        """The architecture's registered name."""
        return self.meta.get("arch")

    @property
    def num_classes(self) -> int | None:
        """The classes the model predicts."""
        return self.meta.get("num_classes")

    @property
    def model_args(self) -> dict[str, Any]:
        """The builder arguments of a library model ({} for the zoo's)."""
        return self._field("model_args")

    @property
    def dataset(self) -> dict[str, Any]:
        """The data set: name, classes, mean, std, image size, flip, folder."""
        return self._field("dataset")

    @property
    def config(self) -> dict[str, Any]:
        """The run's resolved config."""
        return self._field("config")

    @property
    def metrics(self) -> dict[str, Any]:
        """The final and best metrics."""
        return self._field("metrics")

    @property
    def teacher(self) -> dict[str, Any]:
        """What a student records of its teacher (path, sha256 of weights, arch, ...)."""
        return self._field("teacher")

    @property
    def extra(self) -> dict[str, Any]:
        """Run-specific records (a state's epoch and step, a snapshot's epoch)."""
        return self._field("extra")

    @property
    def data_sha256(self) -> str | None:
        """The digest of the tensor data recorded when written (None: written before digests)."""
        return self.raw.get(DIGEST_KEY)

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor, on the CPU, deserialised from the verified bytes (read once)."""
        if self._tensors is None:
            if self._data is None:
                self._read_bytes()
            try:
                self._tensors = load_bytes(self._data or b"")
            except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt file
                raise IcckdError(
                    f"{self.path} is damaged or truncated ({first_line(exc)}); {FIX}"
                ) from None
        return self._tensors

    @property
    def weights_sha256(self) -> str:
        """weights_hash of the tensors, computed once."""
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_hash(self.tensors())
        return self._weights_sha256

    @property
    def file_sha256(self) -> str:
        """sha256 of the file's bytes, from the bytes read (a header-only open reads them)."""
        data = self._data if self._data is not None else self._read_bytes()
        return hashlib.sha256(data).hexdigest()

    def _read_bytes(self) -> bytes:
        """The whole file, read once after a header-only open, and verified."""
        data, header, self.header_len = read_whole(self.path)
        raw = header.get("__metadata__") or {}
        if raw != self.raw:  # rewritten since its header was read: the new header holds
            self.__dict__.pop("meta", None)
        self.raw, self._data = raw, data
        self._verify()
        return data

    def _check_version(self) -> None:
        version = self.raw.get("format_version", "0") if self.is_icckd else "0"
        if not version.isdigit() or int(version) > FORMAT_VERSION:
            raise IcckdError(
                f"{self.path} has checkpoint format {version}, newer than this icckd reads "
                f"({FORMAT_VERSION}); upgrade icckd"
            )

    def _verify(self) -> None:
        """Refuse tensor data that differs from the digest recorded when the file was written."""
        assert self._data is not None
        recorded = self.data_sha256
        if recorded is None:
            if self.is_icckd:
                warnings.warn(
                    f"{self.path} was written before icckd recorded a digest of its tensors, "
                    "so damage inside them cannot be detected; re-create it to get one",
                    UnverifiedCheckpoint,
                    stacklevel=2,
                )
            return
        if data_digest(self._data, self.header_len) != recorded:
            raise IcckdError(
                f"{self.path} is damaged: its tensor data does not match the digest recorded "
                f"when it was written; {FIX}"
            )


def read_metadata(path: Path) -> dict[str, Any]:
    """The decoded metadata of an icckd checkpoint, without loading its tensors."""
    return Checkpoint.open(path).meta


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """All tensors of a checkpoint, their data checked against the recorded digest."""
    tensors = Checkpoint.read(path).tensors()
    return {k: v.to(device) for k, v in tensors.items()} if str(device) != "cpu" else tensors


def weights_hash(state: dict[str, Tensor]) -> str:
    """sha256 over the sorted tensors' names and bytes: identifies a teacher's weights."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
