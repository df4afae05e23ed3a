"""Images per second of small ViTs (timm:, through icckd's adapter) beside the CIFAR CNNs.

A training step (forward, backward, optimiser step on a batch already in place, 32x32
images, 10 classes) and evaluation (forward without gradient), per model, timed interleaved
in one run; the ratio to resnet20 says what a Transformer costs on this machine.

    python benchmarks/bench_vit.py                 # about 3 minutes on one busy CPU core
    python benchmarks/bench_vit.py --threads 2 --reps 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import CpuMonitor, Variant, interleave, machine_info  # noqa: E402

from icckd_cli.models import create_model  # noqa: E402

MODELS: list[tuple[str, str, dict[str, Any]]] = [
    ("resnet8", "resnet8", {}),
    ("resnet20", "resnet20", {}),
    ("vit_tiny p4 (65 tokens)", "timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4}),
    ("vit_tiny p8 (17 tokens)", "timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8}),
]


def train_step(label: str, model: nn.Module, batch: int) -> Variant:
    """One SGD step of cross-entropy on a fixed batch."""
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def run() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return Variant(f"{label}|train", run, batch)


def eval_pass(label: str, model: nn.Module, batch: int) -> Variant:
    """One forward pass without gradient."""
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)

    def run() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    return Variant(f"{label}|eval", run, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(machine_info(torch.device("cpu")))
    variants = []
    params = {}
    for label, name, kw in MODELS:
        model = create_model(name, 10, **kw).to(memory_format=torch.channels_last)
        params[label] = sum(p.numel() for p in model.parameters())
        variants += [train_step(label, model, args.batch), eval_pass(label, model, 4 * args.batch)]
    with CpuMonitor() as mon:
        timings = interleave(variants, warmup=1, reps=args.reps, sync=lambda: None)
    base = {kind: timings[f"resnet20|{kind}"].rate for kind in ("train", "eval")}
    print(f"\n{'model':26s} {'params':>10s} {'train img/s':>12s} {'x resnet20':>10s} "
          f"{'eval img/s':>11s} {'x resnet20':>10s}")  # fmt: skip
    for label, _, _ in MODELS:
        tr, ev = timings[f"{label}|train"].rate, timings[f"{label}|eval"].rate
        print(f"{label:26s} {params[label]:>10,d} {tr:>12.1f} {tr / base['train']:>10.2f} "
              f"{ev:>11.1f} {ev / base['eval']:>10.2f}")  # fmt: skip
    share = "unknown" if mon.other_share is None else f"{mon.other_share:.0%}"
    print(
        f"\nbatch {args.batch} (eval {4 * args.batch}), {args.threads} thread(s), "
        f"median of {args.reps}; other processes took {share} of the CPUs meanwhile"
    )


if __name__ == "__main__":
    main()
