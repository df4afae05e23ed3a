"""`icckd export`: a checkpoint as ONNX, TorchScript or a torch.export program, checked.

The data set's normalisation goes into the graph, so the exported model takes RGB images in
0..1, NCHW, float32, of any batch size, and returns logits. The file is written to a
temporary name, loaded back by its own runtime (onnxruntime, torch.jit.load,
torch.export.load), run on real images of the checkpoint's data set where they are present
(else on random inputs) and compared with the checkpoint's own logits; only an export that
agrees within the tolerance is renamed into place, beside a JSON that says how to feed it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from icckd_cli.base.atomic import atomic_write, write_text_atomic
from icckd_cli.base.checkpoint import versions
from icckd_cli.base.errors import IcckdError, UsageError, first_line
from icckd_cli.commands.evaluation import checkpoint_image_size
from icckd_cli.commands.shipping.formats import (
    EXTRA,
    FORMATS,
    SUFFIX,
    data_file,
    quiet,
    require_runtime,
    write_staged,
)
from icckd_cli.data import LoadOptions, eval_batches, load_dataset
from icckd_cli.models.loading import load_any_model
from icckd_cli.settings.config import ExportConfig

__all__ = ["EXTRA", "FORMATS", "SUFFIX", "export_checkpoint", "quiet", "require_runtime"]
EXAMPLE_BATCH = 2  # torch.export specialises a dimension of size 1, so trace with 2


class WithNormalisation(nn.Module):
    """(B, 3, H, W) RGB in 0..1 -> (B, C) logits: the data set's (x - mean) / std, then the net."""

    mean: Tensor
    std: Tensor

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in 0..1 -> (B, num_classes)."""
        return self.model((images - self.mean) / self.std)


def sidecar_path(out: Path) -> Path:
    """The JSON beside an export: FILE.json (model.onnx -> model.onnx.json)."""
    return out.with_name(out.name + ".json")


# ----------------------------------------------------------------------------- parity


def parity_inputs(meta: dict[str, Any], cfg: ExportConfig, size: int) -> tuple[Tensor, str]:
    """(N, 3, S, S) RGB images in 0..1 from the recorded data set's test split, else random."""
    recorded = meta.get("dataset") or {}
    name, n = recorded.get("name"), cfg.parity_images
    data_dir = cfg.data_dir or recorded.get("data_dir")
    if name:
        per_class = math.ceil(n / max(1, int(meta.get("num_classes") or 1)))
        options = LoadOptions(image_size=size, workers=0)
        try:
            data = load_dataset(name, Path(data_dir) if data_dir else None, download=False,
                                test_per_class=per_class, options=options)  # fmt: skip
        except IcckdError:
            data = None
        if data is not None and data.spec.image_size == size and len(data.test):
            plain = replace(data.spec, mean=[0.0] * 3, std=[1.0] * 3)  # uint8 / 255 alone
            x, _ = next(iter(eval_batches(data.test, plain, len(data.test))))
            x = x.float().contiguous().cpu()[_round_robin(data.test.labels.cpu())[:n]]
            return x, f"{len(x)} {name} test images"
    g = torch.Generator().manual_seed(0)
    where = f"no {name} images here" if name else "no data set recorded"
    return torch.rand(n, 3, size, size, generator=g), f"{n} random inputs ({where})"


def _round_robin(labels: Tensor) -> Tensor:
    """Indices that take each class's first image, then each class's second, ... (N,)."""
    seen: dict[int, int] = {}
    rank = []
    for c in labels.tolist():
        rank.append(seen.get(c, 0))
        seen[c] = rank[-1] + 1
    key = torch.tensor(rank) * (int(labels.max()) + 1) + labels
    return torch.argsort(key, stable=True)


def check_parity(
    module: nn.Module, run: Callable[[Path, Tensor], Tensor], path: Path, x: Tensor
) -> dict[str, Any]:
    """The export's logits against the module's, on x (N, 3, S, S) and on x[:1] alone."""
    with torch.inference_mode():
        want = module(x).float()
    got = run(path, x).float()
    one = run(path, x[:1]).float()  # a batch of another size: the batch axis is dynamic
    diff = max((got - want).abs().max().item(), (one - want[:1]).abs().max().item())
    agree = int((got.argmax(1) == want.argmax(1)).sum())
    return {"max_abs_diff": diff, "logit_scale": max(1.0, want.abs().max().item()),
            "top1_agree": agree, "images": int(x.shape[0])}  # fmt: skip


# ----------------------------------------------------------------------------- export


def export_checkpoint(cfg: ExportConfig) -> dict[str, Any]:
    """Export, check and write cfg.out and its JSON; nothing is written unless they agree."""
    out, side = Path(cfg.out), sidecar_path(Path(cfg.out))
    written = (out, side, data_file(out)) if cfg.format == "onnx" else (out, side)
    for existing in written:
        if existing.exists() and not cfg.overwrite:
            raise UsageError(
                f"{existing} already exists; pass --overwrite to replace it (and "
                f"{side.name if existing == out else out.name}) or choose another --out"
            )
    require_runtime(cfg.format, cfg.onnx_exporter)
    model, meta = load_any_model(cfg.checkpoint, device="cpu", option=None)
    recorded = meta.get("dataset") or {}
    size = checkpoint_image_size(meta, model.arch)
    # the standard layout and float32, whatever the run trained in
    model = model.to(memory_format=torch.contiguous_format).float().eval()
    module = WithNormalisation(model, recorded.get("mean") or [0.0] * 3,
                               recorded.get("std") or [1.0] * 3).eval()  # fmt: skip
    write, run, runtime = FORMATS[cfg.format]
    x, described = parity_inputs(meta, cfg, size)
    parity: dict[str, Any] = {}

    def write_and_check(tmp: Path) -> None:
        example = x[:EXAMPLE_BATCH] if len(x) >= EXAMPLE_BATCH else x.repeat(EXAMPLE_BATCH, 1, 1, 1)
        try:
            with quiet():  # deprecation and tracer notes: the parity check decides
                write(module, example, tmp, cfg)
        except Exception as exc:  # noqa: BLE001 - any exporter failure, told in one line
            raise IcckdError(
                f"cannot export {cfg.checkpoint} ({model.arch}) as {cfg.format}: "
                f"{type(exc).__name__}: {first_line(exc)}; try another --to"
            ) from None
        with quiet():
            parity.update(check_parity(module, run, tmp, x))
        limit = cfg.tolerance * parity["logit_scale"]
        if not parity["max_abs_diff"] <= limit:  # NaN fails too
            raise IcckdError(
                f"the {cfg.format} export of {cfg.checkpoint} differs from the checkpoint by up "
                f"to {parity['max_abs_diff']:.3g} in the logits of {described}, over the "
                f"tolerance {limit:.3g} ({cfg.tolerance:g} x max(1, largest |logit|)); nothing "
                "was written: try another --to, or allow more with --tolerance"
            )

    if cfg.format == "onnx":  # OUT and, over protobuf's limit, OUT.data moved in together
        write_staged(out, write_and_check)
    else:
        atomic_write(out, write_and_check, suffix=SUFFIX[cfg.format])
    data = data_file(out) if cfg.format == "onnx" and data_file(out).exists() else None
    parity = {"inputs": described, **parity, "tolerance": cfg.tolerance, "runtime": runtime}
    classes = recorded.get("classes") or [str(k) for k in range(model.num_classes)]
    info = {
        "file": out.name,
        # the tensors of an ONNX file over protobuf's 2 GiB limit: keep it beside the file
        "external_data": None if data is None else data.name,
        "format": cfg.format,
        "exporter": _exporter(cfg),
        "checkpoint": str(cfg.checkpoint),
        "arch": model.arch,
        "kind": meta.get("kind"),
        "num_classes": model.num_classes,
        "classes": classes,
        "input": {
            "name": "images",
            "shape": ["batch", 3, size, size],
            "dtype": "float32",
            "layout": "NCHW",
            "color": "RGB",
            "range": [0.0, 1.0],
        },  # fmt: skip
        "output": {
            "name": "logits",
            "shape": ["batch", model.num_classes],
            "meaning": "class scores before softmax, in the order of classes",
        },  # fmt: skip
        "preprocessing": preprocessing(meta, size),
        "parity": parity,
        "versions": versions(),
    }
    write_text_atomic(side, json.dumps(info, indent=2) + "\n")
    size = sum(os.path.getsize(p) for p in (out, data) if p is not None)  # with its data
    return {**info, "out": str(out), "sidecar": str(side), "bytes": size}


def preprocessing(meta: dict[str, Any], size: int) -> dict[str, Any]:
    """What to do to an image before the exported graph, and what the graph does itself."""
    recorded = meta.get("dataset") or {}
    if recorded.get("name") == "imagenet":
        short = round(size / 0.875)
        resize = f"resize the short side to {short} pixels, then take the centre {size}x{size} crop"
    else:
        resize = f"images of {size}x{size} pixels, as the data set's (resize to that)"
    out = {
        "before_the_graph": f"{resize}; RGB channels scaled to 0..1 (uint8 / 255), NCHW",
        "in_the_graph": "(x - mean) / std per channel, then the network",
        "mean": recorded.get("mean"),
        "std": recorded.get("std"),
        "dataset": recorded.get("name"),
    }
    published = (meta.get("source") or {}).get("preprocessing")
    if published:  # a fetched torchvision teacher: the weights' own preset
        out["published"] = published
    return out


def _exporter(cfg: ExportConfig) -> str:
    if cfg.format == "onnx":
        kind = "dynamo" if cfg.onnx_exporter == "dynamo" else "TorchScript-based"
        return f"torch.onnx.export ({kind}, opset {cfg.opset})"
    return "torch.jit.trace" if cfg.format == "torchscript" else "torch.export.export"
