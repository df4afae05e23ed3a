"""A model under corruptions: top-1 per corruption and severity, their mean, and the clean top-1.

Two suites: the published CIFAR-10-C / CIFAR-100-C files of a folder (data/cifar_c.py), or the
built-in suite generated from the test split (data/corruptions.py, "icckd-builtin": not
comparable with published CIFAR-10-C numbers). Either way the corrupted uint8 images go
through the checkpoint's own normalisation, exactly as the clean test split does in `eval`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icckd_cli.base.errors import UsageError
from icckd_cli.base.events import Callback
from icckd_cli.data import Dataset, DataSpec, Split
from icckd_cli.data.cifar_c import check_checkpoint, corruption_blocks, open_corruptions_dir
from icckd_cli.data.corruptions import BUILTIN_SUITE, CorruptedBlock, builtin_suite
from icckd_cli.training.engine import evaluate

Progress = Callback  # base/events.py: the one progress type


def evaluate_blocks(
    model: nn.Module,
    blocks: Iterable[CorruptedBlock],
    spec: DataSpec,
    device: torch.device,
    batch_size: int = 512,
    channels_last: bool = False,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """[{corruption, severity, top1}] of each block, normalised as the checkpoint was trained."""
    results = []
    for block in blocks:
        split = Split(block.images.to(device), block.labels.to(device))
        top1 = evaluate(model, split, spec, batch_size, channels_last=channels_last)["top1"]
        row = {"corruption": block.corruption, "severity": block.severity, "top1": top1}
        results.append(row)
        if progress is not None:
            progress("corruption", dict(row))
    return results


def summarise(suite: str, clean_top1: float, results: list[dict[str, Any]]) -> dict[str, Any]:
    """{suite, clean_top1, mean_top1, relative (mean / clean), results}; None where undefined."""
    mean = sum(r["top1"] for r in results) / len(results) if results else None
    relative = mean / clean_top1 if mean is not None and clean_top1 > 0 else None
    return {
        "suite": suite,
        "clean_top1": clean_top1,
        "mean_top1": mean,
        "relative": relative,
        "results": results,
    }


def corruption_robustness(
    model: nn.Module,
    data: Dataset,
    device: torch.device,
    corruptions_dir: Path | None = None,
    source: str = "the checkpoint",
    seed: int = 0,
    batch_size: int = 512,
    channels_last: bool = False,
    progress: Progress | None = None,
    clean_top1: float | None = None,
) -> dict[str, Any]:
    """The `corruptions` JSON of `eval --corruptions`: on the folder's files, or the built-in
    suite of the test split (`data.spec` must hold the checkpoint's normalisation).

    clean_top1: the model's top-1 on the test split when the caller has it already (eval on
    the test split); None evaluates it here.
    """
    spec = data.spec
    if corruptions_dir is not None:
        cdir = open_corruptions_dir(corruptions_dir)
        num_classes = int(getattr(model, "num_classes", spec.num_classes))
        check_checkpoint(cdir, num_classes, spec.image_size, len(spec.mean), source)
        suite, blocks = str(cdir.path), corruption_blocks(cdir)
    else:
        if not isinstance(data.test, Split):
            raise UsageError(
                f"the built-in corruption suite needs a test split held in memory, and "
                f"'{spec.name}' is streamed from disk; use a smaller data set or "
                "--corruptions-dir"
            )
        suite, blocks = BUILTIN_SUITE, builtin_suite(data.test.images, data.test.labels, seed)
    clean = clean_top1
    if clean is None:
        clean = evaluate(model, data.test, spec, batch_size, channels_last=channels_last)["top1"]
    results = evaluate_blocks(model, blocks, spec, device, batch_size, channels_last, progress)
    return summarise(suite, clean, results)


def corruption_metrics(
    model: nn.Module,
    data: Dataset,
    device: torch.device,
    path: Path,
    corruptions_dir: Path | None,
    batch_size: int = 512,
    channels_last: bool = False,
    clean_top1: float | None = None,
) -> dict[str, Any]:
    """The `corruptions` key of eval's JSON: {suite, clean_top1, mean_top1, relative, results}
    (clean_top1: the test split's top-1 when already computed)."""
    return corruption_robustness(
        model,
        data,
        device,
        corruptions_dir,
        source=str(path),
        batch_size=batch_size,
        channels_last=channels_last,
        clean_top1=clean_top1,
    )
