"""The intra-class cache on 1,000 classes: its memory (C x K x D) and the step's extra cost.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_queue_imagenet.py     # ~3 min on 1 core
    PYTHONPATH=. .venv/bin/python benchmarks/bench_queue_imagenet.py --device cuda --size 224

tv_resnet18 (D = 512 pooled features) on 1,000 classes. Three parts:
  memory  the cache's bank, C x K x D fp32, for each K of --ks
  loss    the intra-class loss with its cache read and push alone (forward and backward on
          fixed embeddings of --loss-batch images x 2 views, no network), per K: as it is
          computed now (each anchor against its own class's K slots) and as it was before
          ("flat": every anchor against all C x K slots, other classes masked out; up to
          --flat-max-k, since the flat similarity matrix grows as 2B x C x K)
  step    the cross-entropy step (one view) and the intra-class teacher step (two views,
          CE + 0.05 L_intra, a full cache of --step-k per class, push included): forward,
          backward, SGD on --batch random images of --size px
On the CPU every call is timed by the process's own CPU time (--clock cpu, the default),
which other processes on a shared machine disturb far less than wall time; variants are
interleaved after a warm-up and figures are medians of --reps.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Variant, device_sync, interleave, machine_info  # noqa: E402

from icckd_cli.data.device import Batch  # noqa: E402
from icckd_cli.methods.icc import icc_terms  # noqa: E402
from icckd_cli.models import create_model  # noqa: E402
from icckd_cli.settings.config import TeacherLoss  # noqa: E402
from icckd_cli.training.objectives import TeacherObjective  # noqa: E402

CLASSES = 1000  # --classes changes them for the loss part (e.g. 100 and 64: CIFAR-100,
DIM = 512  # resnet56); the step part always runs tv_resnet18 on 1,000 classes


def cpu_seconds() -> float:
    """CPU seconds this process used."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def timed(fn: Callable[[], None], clock: str) -> Callable[[], float | None]:
    """`fn` returning its own CPU seconds (clock cpu), or None for wall time."""
    if clock != "cpu":
        return lambda: (fn(), None)[1]

    def run() -> float:
        start = cpu_seconds()
        fn()
        return cpu_seconds() - start

    return run


def objective(
    k: int, icc: float, device: torch.device, classes: int = CLASSES, dim: int = DIM
) -> TeacherObjective:
    """The teacher objective with a cache of K per class, every slot filled."""
    loss = TeacherLoss(icc_weight=icc, queue_size=k)
    obj = TeacherObjective.from_config(loss, classes, dim).to(device)
    if obj.queue.enabled:
        labels = torch.arange(classes, device=device).repeat_interleave(k)
        obj.queue.push(torch.randn(len(labels), dim, device=device), labels)
    return obj


def loss_part(args: argparse.Namespace, ks: list[int], device: torch.device) -> None:
    """The loss and cache alone, per-class against flat, at a realistic batch."""
    b, c, d = args.loss_batch, args.classes, args.dim
    g = torch.Generator(device="cpu").manual_seed(0)
    feats = torch.randn(2 * b, d, generator=g).to(device).requires_grad_()
    logits = torch.randn(2 * b, c, generator=g).to(device)
    labels = torch.randint(0, c, (b,), generator=g).to(device)
    batch = Batch([feats], labels, torch.arange(b, device=device))
    objs = {k: objective(k, 0.05, device, c, d) for k in ks}

    def now(obj: TeacherObjective) -> None:
        out = {"features": feats, "logits": logits, "labels": labels.repeat(2), "batch": batch}
        obj._icc(out, {}).backward()
        obj.after_step()

    def flat(obj: TeacherObjective) -> None:
        bank, bank_labels = obj.queue.padded()
        z1, z2 = feats.chunk(2)
        icc_terms(z1, z2, labels, temperature=0.1, queue=bank, queue_labels=bank_labels,
                  anchor_mask=None).loss.backward()  # fmt: skip
        obj.after_step()

    variants = []
    for k in ks:
        variants.append(Variant(f"now K={k}", timed(lambda k=k: now(objs[k]), args.clock), b))
        if 0 < k <= args.flat_max_k:
            variants.append(Variant(f"flat K={k}", timed(lambda k=k: flat(objs[k]), args.clock), b))
    times = interleave(variants, warmup=1, reps=args.reps, sync=device_sync(device))
    print(f"\nloss + cache alone, {c} classes, D = {d}, {b} images x 2 views, forward and "
          f"backward ({args.clock} time)")  # fmt: skip
    print(f"{'K':>5} {'now ms':>10} {'flat ms (before)':>17} {'flat / now':>11}")
    for k in ks:
        now_ms = times[f"now K={k}"].median * 1e3
        if f"flat K={k}" in times:
            flat_ms = times[f"flat K={k}"].median * 1e3
            print(f"{k:>5} {now_ms:>10.2f} {flat_ms:>17.2f} {flat_ms / now_ms:>10.1f}x")
        else:
            print(f"{k:>5} {now_ms:>10.2f} {'-':>17} {'-':>11}")


def step_part(args: argparse.Namespace, device: torch.device) -> None:
    """Cross-entropy step against the intra-class step on the network."""
    torch.manual_seed(0)
    model = create_model("tv_resnet18", CLASSES).to(device).to(memory_format=torch.channels_last)
    b, s = args.batch, args.size
    views = [torch.randn(b, 3, s, s, device=device).contiguous(memory_format=torch.channels_last)
             for _ in range(2)]  # fmt: skip
    labels = torch.randint(0, CLASSES, (b,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    ce, icc = objective(0, 0.0, device), objective(args.step_k, 0.05, device)

    def step(obj: TeacherObjective, n_views: int) -> None:
        loss, _ = obj.forward(model, Batch(views[:n_views], labels, torch.arange(b)), 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        obj.after_step()

    variants = [
        Variant("ce", timed(lambda: step(ce, 1), args.clock), b),
        Variant("icc", timed(lambda: step(icc, 2), args.clock), 2 * b),
    ]
    times = interleave(variants, warmup=1, reps=args.reps, sync=device_sync(device))
    ce_ms, icc_ms = times["ce"].median * 1e3, times["icc"].median * 1e3
    print(f"\nstep, batch {b} at {s}x{s} px, intra-class cache K={args.step_k} ({args.clock} time)")
    print(f"  cross-entropy step   {ce_ms:10.1f} ms")
    print(f"  intra-class step     {icc_ms:10.1f} ms  = {icc_ms / ce_ms:.2f}x the CE step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ks", default="0,16,64,256", help="cache sizes K")
    ap.add_argument("--classes", type=int, default=CLASSES, help="classes, loss part")
    ap.add_argument("--dim", type=int, default=DIM, help="embedding size, loss part")
    ap.add_argument("--loss-batch", type=int, default=256, help="images per view, loss part")
    ap.add_argument("--flat-max-k", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16, help="images per view, step part")
    ap.add_argument("--size", type=int, default=64, help="image side in px, step part")
    ap.add_argument("--step-k", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default=None)
    ap.add_argument("--parts", default="memory,loss,step")
    args = ap.parse_args()
    device = torch.device(args.device)
    args.clock = args.clock or ("cpu" if device.type == "cpu" else "wall")
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    print(f"machine: {machine_info(device)}")
    print(f"{args.classes} classes, D = {args.dim}; {time.strftime('%Y-%m-%d %H:%M')}")
    if "memory" in args.parts:
        print(f"\n{'K':>5} {'cache MiB (C x K x D fp32)':>28}")  # the bank; +C int64
        for k in ks:
            print(f"{k:>5} {args.classes * k * args.dim * 4 / 2**20:>28.1f}")
    if "loss" in args.parts:
        loss_part(args, ks, device)
    if "step" in args.parts:
        step_part(args, device)


if __name__ == "__main__":
    main()
