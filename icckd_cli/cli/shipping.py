"""export: a checkpoint as ONNX, TorchScript or a torch.export program, with a parity check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icckd_cli.base.errors import UsageError
from icckd_cli.cli.common import DataDir, Opt, _collect, _format, app, handle_errors
from icckd_cli.presentation import console, tables
from icckd_cli.settings.config import ExportConfig, build

TARGETS = ("onnx", "torchscript", "exported")


def _spelling(to: str | None, fmt: str, as_json: bool) -> tuple[str, bool]:
    """(export format, JSON output) from --to/--format, and the deprecated --format onnx, --json."""
    if fmt in TARGETS:
        # before --to existed, export's --format named the file's kind and --json the output
        if to is not None:
            raise UsageError(f"give the export format once: --to {to} (not also --format {fmt})")
        console.warning(f"--format {fmt} is deprecated here: use --to {fmt}")
        to, fmt = fmt, "table"
    fmt = _format(fmt)
    if as_json:
        console.warning("--json is deprecated: use --format json")
        fmt = "json"
    if to is None:
        raise UsageError("missing option --to: give onnx, torchscript or exported")
    if to not in TARGETS:
        raise UsageError(f"invalid value for --to ({to!r}): use onnx, torchscript or exported")
    return to, fmt == "json"


@app.command("export")
@handle_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors checkpoint.")],
    out: Annotated[Path, Opt(help="The file to write; FILE.json is written beside it.")],
    to: Annotated[
        str | None, Opt("--to", help="onnx, torchscript or exported (torch.export, .pt2).")
    ] = None,
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
    fmt: Annotated[
        str,
        Opt("--format", help="table or json (onnx, torchscript, exported: deprecated for --to)."),
    ] = "table",
    as_json: Annotated[bool, Opt("--json", help="Deprecated: --format json.")] = False,
) -> None:
    """Export a checkpoint with its normalisation inside, run it, compare with the checkpoint."""
    target, json_out = _spelling(to, fmt, as_json)
    given = _collect(locals(), drop=("to", "as_json", "target", "json_out"))
    cfg = build(ExportConfig, {**given, "format": target, "as_json": json_out})
    from icckd_cli.commands.shipping.export import export_checkpoint

    result = export_checkpoint(cfg)
    if cfg.as_json:
        console.print_json(result)
    else:
        tables.export_table(result)
