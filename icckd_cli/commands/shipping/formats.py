"""The export formats: how each is written and run back, and where an ONNX file's data goes.

ONNX files are protobuf messages, which cannot exceed 2 GiB. An export whose tensors stay
under ONNX_INLINE_LIMIT is one self-contained .onnx file, whichever exporter made it (the
dynamo exporter would otherwise put the weights in a data file named after the temporary
file). A larger one keeps its tensors in one data file named after the output, OUT.data,
which must travel with it. Both are written in a private folder beside the output and moved
into place only once checked (write_staged), so no temporary data file is left behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from icckd_cli.base.errors import UsageError
from icckd_cli.settings.config import ExportConfig

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "exported": ".pt2"}
EXTRA = "pip install -e '.[export]'"
# protobuf's limit is 2 GiB (2**31 bytes) for the whole message; 128 MiB of it are left for
# the graph beside the tensors
ONNX_INLINE_LIMIT = 2**31 - 2**27


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No warnings and no torch log records (graph dumps on failure): the parity check decides."""
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name == "torch" or name.startswith("torch.")]  # fmt: skip
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            with contextlib.redirect_stderr(io.StringIO()):
                yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def require_runtime(fmt: str, onnx_exporter: str = "torchscript") -> None:
    """ONNX needs the optional onnx and onnxruntime packages (dynamo: onnxscript too)."""
    if fmt != "onnx":
        return
    wanted = ["onnx", "onnxruntime"] + (["onnxscript"] if onnx_exporter == "dynamo" else [])
    missing = []
    for name in wanted:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError(
            f"--to onnx needs the {' and '.join(wanted)} packages ({', '.join(missing)} "
            f"missing); install them with {EXTRA} (or use --to torchscript or exported)"
        )


def data_file(out: Path) -> Path:
    """Where an ONNX export over the inline limit keeps its tensors: OUT.data beside OUT."""
    return out.with_name(out.name + ".data")


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of the module's parameters and buffers: what an export stores."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


# ----------------------------------------------------------------------------- writers, runners


def _write_onnx(module: nn.Module, example: Tensor, path: Path, cfg: ExportConfig) -> None:
    """Write path (inside a folder of its own): one file, or path and path.data when large."""
    external = tensor_bytes(module) > ONNX_INLINE_LIMIT
    if cfg.onnx_exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(module, (example,), str(path), dynamo=True, verbose=False,
                          dynamic_shapes=({0: batch},), input_names=["images"],
                          output_names=["logits"], opset_version=cfg.opset,
                          external_data=external)  # fmt: skip
    else:
        axes = {"images": {0: "batch"}, "logits": {0: "batch"}}
        torch.onnx.export(module, (example,), str(path), dynamo=False, dynamic_axes=axes,
                          input_names=["images"], output_names=["logits"],
                          opset_version=cfg.opset)  # fmt: skip
    gather_onnx(path, external)


def gather_onnx(path: Path, external: bool) -> None:
    """Fold external data back into path, or (external) gather all of it into path.data.

    Any other file the exporter left in path's folder (one per tensor, or one named after
    another file) is removed, once its tensors are read back.
    """
    wanted = {path, data_file(path)} if external else {path}
    found = set(path.parent.iterdir())
    if found == wanted:
        return
    import onnx

    model = onnx.load(str(path))  # with the tensors of any external data it names
    for p in found:
        p.unlink()
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data_file(path).name)  # fmt: skip
    else:
        onnx.save_model(model, str(path))


def _run_onnx(path: Path, x: Tensor) -> Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def _write_torchscript(module: nn.Module, example: Tensor, path: Path, cfg: ExportConfig) -> None:
    traced = torch.jit.trace(module, example)
    torch.jit.save(traced, str(path))


def _run_torchscript(path: Path, x: Tensor) -> Tensor:
    with torch.inference_mode():
        return torch.jit.load(str(path), map_location="cpu")(x)


def _write_exported(module: nn.Module, example: Tensor, path: Path, cfg: ExportConfig) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes={"images": {0: batch}})
    torch.export.save(program, str(path))


def _run_exported(path: Path, x: Tensor) -> Tensor:
    with torch.inference_mode():
        return torch.export.load(str(path)).module()(x)


Writer = Callable[[nn.Module, Tensor, Path, ExportConfig], None]
FORMATS: dict[str, tuple[Writer, Callable[[Path, Tensor], Tensor], str]] = {
    "onnx": (_write_onnx, _run_onnx, "onnxruntime (CPUExecutionProvider)"),
    "torchscript": (_write_torchscript, _run_torchscript, "torch.jit.load"),
    "exported": (_write_exported, _run_exported, "torch.export.load"),
}


def write_staged(out: Path, write: Callable[[Path], None]) -> None:
    """write(OUT) in a private folder beside out, then OUT.data (if any) and OUT moved in.

    An OUT.data of an earlier export is replaced by the new one, or removed when the new
    export has none; nothing is moved unless `write` returns.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp = staging / out.name
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        for p in staging.iterdir():
            os.chmod(p, 0o666 & ~mask)  # the usual mode, as atomic_write gives
            with p.open("rb+") as fh:
                os.fsync(fh.fileno())
        if data_file(tmp).exists():
            os.replace(data_file(tmp), data_file(out))
        else:
            data_file(out).unlink(missing_ok=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
