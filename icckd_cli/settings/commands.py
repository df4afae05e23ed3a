"""The settings of the commands that train nothing: eval, export, inspect, fetch, plot."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from icckd_cli.settings.common import _Strict


class EvalConfig(_Strict):
    """`icckd eval`: the data set defaults to the one recorded in the checkpoint."""

    checkpoint: Path
    dataset: str | None = None
    data_dir: Path | None = None
    download: bool = True
    split: Literal["test", "train", "val"] = "test"  # val: the run's held-out images
    device: str = "auto"
    batch_size: int = Field(512, ge=1)  # evaluation batch, and the batch of --latency's throughput
    latency: bool = False  # latency_ms at batch 1 and throughput at batch_size
    cost_only: bool = False  # params, size_mb, macs (and latency) without loading the data set
    format: Literal["table", "json"] = "table"


class ExportConfig(_Strict):
    """`icckd export`: a checkpoint as ONNX, TorchScript or a torch.export program, checked."""

    checkpoint: Path
    format: Literal["onnx", "torchscript", "exported"]
    out: Path
    overwrite: bool = False
    # the parity check: the export's logits against the checkpoint's on `parity_images`
    # images; the largest |difference| may be at most tolerance x max(1, largest |logit|)
    tolerance: float = Field(1e-4, gt=0)
    parity_images: int = Field(32, ge=1)
    data_dir: Path | None = None  # where the recorded data set is, if not where it was
    # the TorchScript-based ONNX exporter: 30-50x faster than torch 2.14's default dynamo
    # exporter on a CPU here (docs/shipping.md) and needs no onnxscript
    onnx_exporter: Literal["torchscript", "dynamo"] = "torchscript"
    opset: int = Field(18, ge=7)
    as_json: bool = False  # --json: the result as JSON (--format names the export format here)


class InspectConfig(_Strict):
    """`icckd inspect-softlabels`: one or more checkpoints side by side."""

    checkpoints: list[Path] = Field(min_length=1)
    dataset: str | None = None
    data_dir: Path | None = None
    download: bool = True
    split: Literal["test", "train"] = "test"
    temperature: float = Field(4.0, gt=0)
    device: str = "auto"
    batch_size: int = Field(512, ge=1)
    per_class: bool = False
    all_classes: bool = False
    plot: Path | None = None
    format: Literal["table", "json"] = "table"


class FetchConfig(_Strict):
    """`icckd fetch-teacher`: a published teacher converted into an icckd checkpoint."""

    name: str
    out: Path
    source: str | None = None  # --from: a mirror URL or a file downloaded by hand
    sha256: str | None = None  # the downloaded file's expected sha256 (full or a prefix)
    overwrite: bool = False
    evaluate: bool = True  # top-1 on the data set's test split, where the data set is present
    data_dir: Path | None = None
    device: str = "auto"
    batch_size: int = Field(512, ge=1)
    format: Literal["table", "json"] = "table"

    @model_validator(mode="after")
    def _check(self) -> FetchConfig:
        if self.out.suffix != ".safetensors":
            raise ValueError(
                f"invalid value for --out ({str(self.out)!r}): name the checkpoint FILE.safetensors"
            )
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{8,64}", self.sha256):
            raise ValueError(
                f"invalid value for --sha256 ({self.sha256!r}): give the file's sha256 as hex "
                "digits (8 to 64 of them)"
            )
        return self


class PlotConfig(_Strict):
    """`icckd plot`: learning curves of run folders side by side."""

    runs: list[Path] = Field(min_length=1)
    out: Path
    metrics: list[str] | None = None  # None: train_loss, top1 and nll
    format: Literal["table", "json"] = "table"
