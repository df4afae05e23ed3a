"""fetch-teacher: a published teacher (CRD CIFAR-100 zoo, torchvision) in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icckd_cli.base.errors import UsageError
from icckd_cli.base.torchvision_check import check_torchvision
from icckd_cli.cli.common import DataDir, Device, Format, Opt, _format, app, handle_errors
from icckd_cli.presentation import console, tables
from icckd_cli.presentation.progress import DownloadProgress
from icckd_cli.settings.config import FetchConfig, build


@app.command("fetch-teacher")
@handle_errors
def fetch_teacher(
    name: Annotated[
        str,
        typer.Argument(help="crd:ARCH (CIFAR-100) or torchvision:WEIGHTS, e.g. crd:resnet56."),
    ],
    out: Annotated[Path, Opt("--out", help="Checkpoint to write (FILE.safetensors).")],
    source: Annotated[
        str | None, Opt("--from", help="A mirror URL, or the file already downloaded by hand.")
    ] = None,
    sha256: Annotated[
        str | None, Opt(help="Expected sha256 of the downloaded file (hex, or a prefix).")
    ] = None,
    overwrite: Annotated[bool | None, Opt("--overwrite", help="Replace an existing --out.")] = None,
    evaluate: Annotated[
        bool | None,
        Opt("--eval/--no-eval", help="Print top-1 on the test split where the data set is here."),
    ] = None,
    data_dir: DataDir = None,
    device: Device = None,
    batch_size: Annotated[int | None, Opt(help="Evaluation batch size.")] = None,
    fmt: Format = "table",
) -> None:
    """Download a published teacher and write it as an icckd checkpoint."""
    given = {k: v for k, v in locals().items() if v is not None and k != "fmt"}
    cfg = build(FetchConfig, {**given, "format": _format(fmt)})
    check_torchvision()  # the weights' names and the networks come from torchvision
    if cfg.out.exists() and not cfg.overwrite:
        raise UsageError(f"{cfg.out} exists; pass --overwrite to replace it, or another --out")
    from icckd_cli.commands.published import evaluate_if_present
    from icckd_cli.commands.published import fetch_teacher as fetch

    progress = DownloadProgress()
    try:
        meta = fetch(cfg.name, cfg.out, cfg.source, cfg.sha256, progress, cfg.data_dir)
    finally:
        progress.close()
    metrics, why = (None, None)
    if cfg.evaluate:
        metrics, why = evaluate_if_present(cfg.out, cfg.device, cfg.batch_size)
    result = {
        "checkpoint": str(cfg.out),
        "name": cfg.name,
        "arch": meta["arch"],
        "dataset": meta["dataset"]["name"],
        "num_classes": meta["num_classes"],
        "url": meta["source"]["url"],
        "sha256": meta["source"]["sha256"],
        "verified": meta["source"]["verified"],
        "top1": metrics["top1"] if metrics else None,
    }
    if cfg.format == "json":
        console.print_json(result)
        return
    tables.fetched_table(result)
    if why is not None:
        console.note(
            f"top-1 not measured ({why}); once the data set is here: icckd eval {cfg.out} "
            "--data-dir DIR"
        )
