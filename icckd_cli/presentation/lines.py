"""The one-line texts of a run: its recipe, each epoch, the teacher-output store, its best."""

from __future__ import annotations

from typing import Any

from icckd_cli.base.units import size_text
from icckd_cli.methods.registry import loss_parts

# the total first, then each registered method's parts in registration order
LOSS_ORDER = loss_parts()
SHORT = {"icc_gate_pass": "gate", "icc_negatives": "negs", "icc_counted": "counted"}


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One line per epoch: losses by name, gate statistics, accuracy, speed."""
    parts = [f"epoch {record['epoch']:>3}/{epochs}"]
    train = {k[6:]: v for k, v in record.items() if k.startswith("train_")}
    for name in [*LOSS_ORDER, *sorted(set(train) - set(LOSS_ORDER))]:
        if name in train:
            parts.append(f"{SHORT.get(name, name)} {train[name]:.3g}")
    if "top1" in record:  # epochs between --eval-every evaluations have none
        parts.append(f"top1 {record['top1']:.2f}")
    if "val_top1" in record:
        parts.append(f"val {record['val_top1']:.2f}")
    parts.append(f"lr {record['lr']:.3g}")
    parts.append(f"{record['images_per_s']:.0f} img/s")
    return "  ".join(parts)


def teacher_cache_line(info: dict[str, Any]) -> str:
    """What the teacher-output store does: its size before it is written, or that it is read."""
    size, path = size_text(info["bytes"]), info["path"]
    if info["action"] == "read":
        return f"teacher cache: reading {path} ({size}); the teacher is not run"
    if info["action"] == "damaged":
        return (
            f"teacher cache: {path}: batches {info['done'] + 1} to {info['counted']} of "
            f"{info['total']} do not all match the checksums written with them (or have none); "
            "writing them again"
        )
    if info["action"] == "seal":
        return f"teacher cache: all {info['total']} batches of {path} verified; sealing it"
    if info["action"] == "resume":
        return (
            f"teacher cache: resuming {path} at batch {info['done'] + 1} of {info['total']} "
            f"({size}, {info['dtype']})"
        )
    return f"teacher cache: writing {size} to {path} ({info['total']} batches, {info['dtype']})"


def _short(x: float) -> str:
    """A number as a recipe states it: 0.05, 5e-4."""
    text = f"{x:g}"
    if "e" not in text and x < 1e-3:
        text = f"{x:.0e}" if float(f"{x:.0e}") == x else text
    return text.replace("e-0", "e-")


def recipe_line(info: dict[str, Any]) -> str:
    """The first line of a run: which recipe, why, and what it trains with."""
    name = "AdamW" if info["optimizer"] == "adamw" else "SGD"
    lr = f"lr {info['lr']:g}"
    if info.get("lr_rule"):
        r = info["lr_rule"]
        lr += f" ({_short(r['lr'])} x {r['batch']}/{r['per']})"
    parts = [f"{name} {lr}"]
    if info["optimizer"] == "sgd":
        parts.append(f"momentum {info['momentum']:g}")
    parts.append(f"wd {_short(info['weight_decay'])}")
    if info["schedule"] == "cosine":
        parts.append("cosine")
    elif info["decay_epochs"]:
        at = ",".join(map(str, info["decay_epochs"]))
        plural = "s" if len(info["decay_epochs"]) > 1 else ""
        parts.append(f"x{info['decay_rate']:g} at epoch{plural} {at}")
    else:
        parts.append("no decay")
    warm = info.get("warmup_epochs") or 0
    if warm:
        parts.append(f"{warm} warm-up epoch{'s' if warm > 1 else ''}")
    return f"recipe: {info['name']} ({info['reason']}): " + ", ".join(parts)


def best_phrase(best: dict[str, Any]) -> str:
    """'best 71.20 at epoch 9', or '70.10 at epoch 9, the best on validation'."""
    if best.get("chosen_on") == "val":
        return f"{best['top1']:.2f} at epoch {best['epoch']}, the best on validation"
    return f"best {best['top1']:.2f} at epoch {best['epoch']}"


def train_split_line(info: dict[str, Any]) -> str:
    """'long-tailed training split (--imbalance-factor 10): 100 to 10 images per class, 395'."""
    return (
        f"long-tailed training split (--imbalance-factor {info['factor']:g}): "
        f"{info['largest']:,} to {info['smallest']:,} images per class, "
        f"{info['total']:,} in all"
    )
