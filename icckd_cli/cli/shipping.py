"""export: a checkpoint as ONNX, TorchScript or a torch.export program, with a parity check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icckd_cli.cli.common import DataDir, Opt, _collect, app, handle_errors
from icckd_cli.presentation import console, tables
from icckd_cli.settings.config import ExportConfig, build


@app.command("export")
@handle_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors checkpoint.")],
    format: Annotated[
        str, Opt("--format", help="onnx, torchscript or exported (torch.export, .pt2).")
    ],
    out: Annotated[Path, Opt(help="The file to write; FILE.json is written beside it.")],
    overwrite: Annotated[
        bool | None, Opt("--overwrite", help="Replace an existing FILE (and FILE.json).")
    ] = None,
    tolerance: Annotated[
        float | None,
        Opt(help="Largest |logit difference| allowed, times max(1, largest |logit|) (1e-4)."),
    ] = None,
    parity_images: Annotated[
        int | None, Opt(help="Images (or random inputs) the parity check runs on (32).")
    ] = None,
    data_dir: DataDir = None,
    onnx_exporter: Annotated[
        str | None, Opt(help="torchscript (default: fast) or dynamo (needs onnxscript).")
    ] = None,
    opset: Annotated[int | None, Opt(help="ONNX opset (18).")] = None,
    as_json: Annotated[
        bool, Opt("--json", help="Print the result as JSON (--format names the export format).")
    ] = False,
) -> None:
    """Export a checkpoint with its normalisation inside, run it, compare with the checkpoint."""
    cfg = build(ExportConfig, _collect(locals()))
    from icckd_cli.work.shipping.export import export_checkpoint

    result = export_checkpoint(cfg)
    if cfg.as_json:
        console.print_json(result)
    else:
        tables.export_table(result)
