"""fetch-teacher against a loopback HTTP server (127.0.0.1 only) serving generated files in
the real layouts: mdistiller's cifar_teachers.tar and torchvision's hash-named .pth files."""

from __future__ import annotations

import hashlib
import io
import socket
import struct
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from icckd_cli.base.checkpoint import Checkpoint, read_metadata
from icckd_cli.commands.published import cached_path
from icckd_cli.commands.published.crd import CIFAR100_CLASSES, CRD_MEMBER
from icckd_cli.models import create_model
from tests.helpers import icckd

Capsys = pytest.CaptureFixture[str]


@dataclass
class Served:
    """What the loopback server hands out, and what it was asked."""

    files: dict[str, bytes]
    cut_once: set[str] = field(default_factory=set)  # paths whose first answer stops halfway
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            rng = self.headers.get("Range")
            served.requests.append((self.path, rng))
            body = served.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
            self.send_response(206 if rng else 200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if self.path in served.cut_once:  # promise the whole file, send half, hang up
                served.cut_once.discard(self.path)
                self.wfile.write(body[start : len(body) // 2])
                self.close_connection = True
                return
            self.wfile.write(body[start:])

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def teacher_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model("resnet56", 100).state_dict()


@pytest.fixture(scope="module")
def crd_tar(teacher_state: dict[str, torch.Tensor]) -> bytes:
    """cifar_teachers.tar as mdistiller publishes it, with a RepDistiller-style resnet56."""
    ckpt = io.BytesIO()
    torch.save({"epoch": 240, "model": teacher_state, "accuracy": torch.tensor(72.3)}, ckpt)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(CRD_MEMBER.format(arch="resnet56"))
        info.size = len(ckpt.getvalue())
        tar.addfile(info, io.BytesIO(ckpt.getvalue()))
    return buf.getvalue()


@pytest.fixture
def server(crd_tar: bytes) -> Iterator[tuple[str, Served]]:
    """A threaded HTTP server on 127.0.0.1 for one test, shut down after it."""
    served = Served({"/r/cifar_teachers.tar": crd_tar, "/cut/cifar_teachers.tar": crd_tar})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICCKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def _one_line_error(r: object, code: int) -> str:
    assert r.code == code, r.err  # type: ignore[attr-defined]
    err = r.err.strip()  # type: ignore[attr-defined]
    assert err.startswith("error: ") and "Traceback" not in err
    return " ".join(err.split())  # rich wraps long lines on narrow terminals


def test_crd_teacher_from_a_mirror(
    capsys: Capsys, tmp_path: Path, server: tuple[str, Served], crd_tar: bytes,
    teacher_state: dict[str, torch.Tensor],
) -> None:  # fmt: skip
    base, served = server
    url = f"{base}/r/cifar_teachers.tar"
    out = tmp_path / "t.safetensors"
    r = icckd(capsys, "fetch-teacher", "crd:resnet56", "--from", url, "--out", out,
              "--no-eval", "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    got = r.json()
    digest = hashlib.sha256(crd_tar).hexdigest()
    assert (got["arch"], got["dataset"], got["sha256"], got["url"]) == (
        "resnet56", "cifar100", digest, url,
    )  # fmt: skip
    tensors = load_file(str(out))
    assert tensors.keys() == teacher_state.keys()
    assert all(torch.equal(tensors[k], teacher_state[k]) for k in tensors)
    meta = read_metadata(out)
    assert meta["kind"] == "teacher" and meta["num_classes"] == 100
    assert meta["dataset"]["classes"] == CIFAR100_CLASSES and meta["dataset"]["image_size"] == 32
    assert meta["source"] == {"name": "crd:resnet56", "url": url, "sha256": digest,
                              "file": "cifar_teachers/resnet56_vanilla/ckpt_epoch_240.pth",
                              "verified": False}  # fmt: skip
    # the import is our format, with the digest of its tensors (a .pth has none)
    data = out.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert Checkpoint.read(out).data_sha256 == hashlib.sha256(data[8 + n :]).hexdigest()
    # downloaded once: a second fetch reads the cache, and the cache holds no partial file
    cached = cached_path(url, torchvision=False)
    assert cached.read_bytes() == crd_tar and not list(cached.parent.glob("*.part"))
    r = icckd(capsys, "fetch-teacher", "crd:resnet56", "--from", url, "--out",
              tmp_path / "again.safetensors", "--sha256", digest, "--no-eval")  # fmt: skip
    assert r.code == 0, r.err
    assert len(served.requests) == 1 and "resnet56" in r.out


def test_truncated_download_errors_then_resumes(
    capsys: Capsys, tmp_path: Path, server: tuple[str, Served], crd_tar: bytes
) -> None:
    base, served = server
    url = f"{base}/cut/cifar_teachers.tar"
    served.cut_once.add("/cut/cifar_teachers.tar")
    out = tmp_path / "t.safetensors"
    r = icckd(capsys, "fetch-teacher", "crd:resnet56", "--from", url, "--out", out, "--no-eval")
    half = len(crd_tar) // 2
    assert _one_line_error(r, 1) == (
        f"error: the download of {url} stopped at {half:,} of {len(crd_tar):,} bytes; run the "
        "command again to resume it, or pass a complete file with --from FILE"
    )
    cached = cached_path(url, torchvision=False)
    assert not out.exists() and not cached.exists()
    assert cached.with_name(cached.name + ".part").stat().st_size == half
    r = icckd(capsys, "fetch-teacher", "crd:resnet56", "--from", url, "--out", out, "--no-eval")
    assert r.code == 0, r.err
    assert served.requests[-1] == ("/cut/cifar_teachers.tar", f"bytes={half}-")  # resumed
    assert cached.read_bytes() == crd_tar and out.is_file()


def test_wrong_hash_and_unknown_name_leave_nothing(
    capsys: Capsys, tmp_path: Path, server: tuple[str, Served]
) -> None:
    base, _ = server
    url = f"{base}/r/cifar_teachers.tar"
    out = tmp_path / "t.safetensors"
    r = icckd(capsys, "fetch-teacher", "crd:resnet56", "--from", url, "--out", out,
              "--sha256", "0" * 64)  # fmt: skip
    message = _one_line_error(r, 1)
    assert "not the expected 0000000000000000..." in message and "removed from the cache" in message
    assert not out.exists() and not cached_path(url, torchvision=False).exists()
    r = icckd(capsys, "fetch-teacher", "crd:resnet57", "--out", out)
    assert _one_line_error(r, 2).startswith(
        "error: unknown published teacher 'crd:resnet57'. Did you mean: crd:resnet56"
    )
    assert not out.exists()


def test_offline_error_names_the_url_and_from(capsys: Capsys, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar_teachers.tar"
    out = tmp_path / "t.safetensors"
    r = icckd(capsys, "fetch-teacher", "crd:vgg13", "--from", url, "--out", out)
    message = _one_line_error(r, 1)
    assert message.startswith(f"error: cannot download {url} (")
    assert message.endswith("pass the file with --from FILE (or a mirror with --from URL)")
    assert not out.exists()


def test_crd_teacher_from_files_on_disk(
    capsys: Capsys, tmp_path: Path, crd_tar: bytes, teacher_state: dict[str, torch.Tensor]
) -> None:
    tar = tmp_path / "cifar_teachers.tar"
    tar.write_bytes(crd_tar)
    out = tmp_path / "t.safetensors"
    r = icckd(capsys, "fetch-teacher", "crd:resnet56", "--from", tar, "--out", out)
    assert r.code == 0, r.err
    # CIFAR-100 is not in the private cache: the checkpoint is written, top-1 is not measured
    assert "top-1 not measured" in " ".join(r.err.split()) and "not evaluated" in r.out
    assert read_metadata(out)["source"]["url"] == str(tar.resolve())
    r = icckd(capsys, "fetch-teacher", "crd:resnet56", "--from", tar, "--out", out)
    assert _one_line_error(r, 2).endswith(
        "exists; pass --overwrite to replace it, or another --out"
    )
    # the member downloaded by hand on its own (a RepDistiller-style .pth) works too
    pth = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": teacher_state}, pth)
    r = icckd(capsys, "fetch-teacher", "crd:resnet56", "--from", pth, "--out", out,
              "--overwrite", "--no-eval")  # fmt: skip
    assert r.code == 0, r.err
    assert torch.equal(load_file(str(out))["fc.weight"], teacher_state["fc.weight"])
    # the wrong archive for the name: one line naming the member it lacks
    r = icckd(capsys, "fetch-teacher", "crd:vgg13", "--from", tar, "--out",
              tmp_path / "v.safetensors")  # fmt: skip
    assert "holds no cifar_teachers/vgg13_vanilla/ckpt_epoch_240.pth" in _one_line_error(r, 1)
    assert not (tmp_path / "v.safetensors").exists()


def _hub_named(state: dict[str, torch.Tensor], folder: Path, stem: str, good: bool) -> Path:
    """`state` saved as torch.hub names its files: STEM-<first 8 hex of the sha256>.pth."""
    tmp = folder / "tmp.pth"
    torch.save(state, tmp)
    prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8] if good else "deadbeef"
    return tmp.rename(folder / f"{stem}-{prefix}.pth")


def test_torchvision_weights_record_the_enums_metadata(capsys: Capsys, tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    good = _hub_named(state, tmp_path, "resnet18", good=True)
    out = tmp_path / "r18.safetensors"
    name = "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    r = icckd(capsys, "fetch-teacher", name, "--from", good, "--out", out, "--no-eval")
    assert r.code == 0, r.err
    tensors = load_file(str(out))
    assert all(torch.equal(tensors[k], state[k]) for k in state) and tensors.keys() == state.keys()
    meta = read_metadata(out)
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    tf = weights.transforms()
    assert meta["arch"] == "tv_resnet18" and meta["num_classes"] == 1000
    assert meta["dataset"]["name"] == "imagenet"
    assert meta["dataset"]["classes"] == weights.meta["categories"]
    assert meta["dataset"]["class_order"] == "wnid"  # matched to ILSVRC folders by order
    assert meta["dataset"]["mean"] == list(tf.mean) and meta["dataset"]["image_size"] == 224
    assert meta["source"]["preprocessing"]["resize_size"] == list(tf.resize_size) == [256]
    assert meta["source"]["verified"] is True
    assert meta["source"]["published_metrics"]["ImageNet-1K"]["acc@1"] == 69.758
    bad = _hub_named(state, tmp_path, "resnet18", good=False)
    r = icckd(capsys, "fetch-teacher", name, "--from", bad, "--out", tmp_path / "b.safetensors")
    message = _one_line_error(r, 1)
    assert "not the expected deadbeef..." in message and "removed" not in message
    assert bad.is_file() and not (tmp_path / "b.safetensors").exists()  # the user's file stays


def test_top1_is_measured_where_the_data_set_is_present(tmp_path: Path) -> None:
    """The evaluation fetch-teacher runs after converting, on a checkpoint whose data is here."""
    from icckd_cli.commands.published import evaluate_if_present
    from tests.helpers import digits_teacher

    ckpt = tmp_path / "t.safetensors"
    digits_teacher(ckpt, config={"test_per_class": 5})  # eval uses the recorded subset
    metrics, why = evaluate_if_present(ckpt, device="cpu")
    assert why is None and metrics is not None
    assert metrics["dataset"] == "digits" and metrics["n"] == 50 and 0 <= metrics["top1"] <= 100
