"""Training images without labels: labels hidden past N per class, and folders of extra images.

A hidden label is -1 from the moment the data set is loaded, so no loss, metric or record
can read the true one. Which images keep their label follows the --train-per-class rule
(data/holdout.py): the first N of each class in the data set's order, after the validation
split, whatever --seed is; so the labelled images of N are among those of any larger N.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from icckd_cli.base.errors import UsageError
from icckd_cli.data.decode import decode_files
from icckd_cli.data.loading import cache_key, stamps
from icckd_cli.data.registry import LoadOptions, Split, _cached
from icckd_cli.data.sources import IMAGE_SUFFIXES

HIDDEN = -1  # the label of an image trained on without its label


def labelled_positions(labels: Tensor, per_class: int, classes: list[str]) -> Tensor:
    """(N,) bool: the first `per_class` images of every class, in the split's order."""
    keep = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
    for c in range(len(classes)):
        where = (labels == c).nonzero().flatten()
        if len(where) < per_class:
            raise UsageError(
                f"--labels-per-class {per_class} asks for more labelled images than the "
                f"{len(where)} training images of class '{classes[c]}'; lower --labels-per-class"
            )
        keep[where[:per_class]] = True
    return keep


def hide_labels(split: Split, per_class: int, classes: list[str]) -> Split:
    """The same images, with the label of every image past the first N of its class -1."""
    if not isinstance(split, Split):
        raise UsageError("--labels-per-class needs a data set held in memory, not a streamed one")
    keep = labelled_positions(split.labels, per_class, classes)
    labels = torch.where(keep, split.labels, torch.full_like(split.labels, HIDDEN))
    return Split(split.images, labels, split.index)


def image_files(root: Path) -> list[Path]:
    """Every image under `root`, nested or flat, sorted by path (folder names mean nothing)."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_unlabeled(root: Path, size: int, opts: LoadOptions) -> Split:
    """The images of an --unlabeled-dir as uint8 (N, 3, size, size), labels -1; decoded once."""
    if not Path(root).is_dir():
        raise UsageError(f"--unlabeled-dir {root} does not exist; pass a folder of images")
    files = image_files(Path(root))
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise UsageError(f"--unlabeled-dir {root} holds no images ({suffixes}); check the folder")
    key = {**cache_key("unlabeled", stamps(files)), "size": size}

    def build() -> tuple[dict, dict[str, Split]]:
        arrays = decode_files(
            files, size, workers=opts.workers, progress=opts.progress, what="unlabelled images"
        )
        x = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
        return {}, {"unlabeled": Split(x, torch.full((len(x),), HIDDEN, dtype=torch.long))}

    return _cached(key, build)[1]["unlabeled"]


def join(train: Split, extra: Split) -> Split:
    """The training split followed by the extra images, renumbered 0..N-1."""
    if not isinstance(train, Split):
        raise UsageError("--unlabeled-dir needs a data set held in memory, not a streamed one")
    images = torch.cat([train.images, extra.images.to(train.images.device)])
    labels = torch.cat([train.labels, extra.labels.to(train.labels.device)])
    return Split(images, labels, torch.arange(len(labels), device=labels.device))


def ratio_plan(labels: Tensor, ratio: float, batch_size: int) -> tuple[int, int, int]:
    """(labelled, unlabelled images per batch, steps per epoch) of --unlabeled-ratio.

    An epoch is one pass over the labelled images (the scarce ones); fewer labelled images
    than a batch's share make one smaller batch of them all, in the same ratio.
    """
    have = int((labels >= 0).sum())
    if have == 0:
        raise UsageError("--unlabeled-ratio needs labelled training images; none are left")
    unl_share = round(ratio * batch_size)
    per = min(batch_size - unl_share, have)
    unl = round(per * ratio / (1 - ratio))
    if unl and int((labels < 0).sum()) == 0:
        raise UsageError(f"--unlabeled-ratio {ratio:g} needs unlabelled images; there are none")
    return per, unl, -(-have // per)


def ratio_order(labels: Tensor, ratio: float, batch_size: int, g: torch.Generator) -> Tensor:
    """(steps, labelled + unlabelled per batch) positions of one epoch: labelled first.

    Each stream is a shuffle of its own images, cycled when a pass runs out.
    """
    per, unl, steps = ratio_plan(labels, ratio, batch_size)
    have = (labels >= 0).cpu()
    streams = []
    for pool, count in ((have.nonzero().flatten(), per), ((~have).nonzero().flatten(), unl)):
        need = steps * count
        if need == 0:
            streams.append(torch.empty(steps, 0, dtype=torch.long))
            continue
        passes = -(-need // len(pool))
        order = torch.cat([pool[torch.randperm(len(pool), generator=g)] for _ in range(passes)])
        streams.append(order[:need].view(steps, count))
    return torch.cat(streams, dim=1)
