"""The intra-class cache on 1,000 classes: its memory (C x K x D) and the step's extra cost.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_queue_imagenet.py            # ~2 min, 2 cores
    PYTHONPATH=. .venv/bin/python benchmarks/bench_queue_imagenet.py --device cuda --size 224

tv_resnet18 (D = 512 pooled features) on 1,000 classes, batch --batch (two views each),
random images of --size px. For each cache size K it times, interleaved after a warm-up:
  ce      the cross-entropy step (one view): forward, backward, SGD
  icc K   the intra-class teacher step (two views, CE + 0.05 L_intra, cache of K per class,
          filled), the same optimiser, plus the cache push
and the intra-class loss with its cache read and push alone (the same embeddings, forward
and backward), so its share of the step shows without the network; `flat K` is the loss as
it was computed before (every anchor against all C*K slots, other classes masked out).
Figures are medians.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Variant, device_sync, interleave, machine_info  # noqa: E402

from icckd_cli.config import TeacherLoss  # noqa: E402
from icckd_cli.data.device import Batch  # noqa: E402
from icckd_cli.losses import icc_terms  # noqa: E402
from icckd_cli.models import create_model  # noqa: E402
from icckd_cli.objectives import TeacherObjective  # noqa: E402

CLASSES = 1000


def _objective(k: int, icc: float, dim: int, device: torch.device) -> TeacherObjective:
    obj = TeacherObjective.from_config(TeacherLoss(icc_weight=icc, queue_size=k), CLASSES, dim).to(
        device
    )
    if obj.queue.enabled:  # fill every class's K slots, as after the first epochs
        labels = torch.arange(CLASSES, device=device).repeat_interleave(k)
        obj.queue.push(torch.randn(len(labels), dim, device=device), labels)
    return obj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=64, help="image side in px")
    ap.add_argument("--batch", type=int, default=32, help="images per view")
    ap.add_argument("--ks", default="0,16,64,256", help="cache sizes K to time")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ks = [int(k) for k in args.ks.split(",")]
    info = machine_info(device)
    print(f"machine: {info}")
    torch.manual_seed(0)
    model = create_model("tv_resnet18", CLASSES).to(device)
    model = model.to(memory_format=torch.channels_last)
    dim = model.feature_dim
    b, s = args.batch, args.size
    views = [torch.randn(b, 3, s, s, device=device).contiguous(memory_format=torch.channels_last)
             for _ in range(2)]  # fmt: skip
    labels = torch.randint(0, CLASSES, (b,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    sync = device_sync(device)

    def step(obj: TeacherObjective, n_views: int) -> None:
        batch = Batch(views[:n_views], labels, torch.arange(b, device=device))
        loss, _ = obj.forward(model, batch, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        obj.after_step()

    print(f"\ntv_resnet18, {CLASSES} classes, D = {dim}, batch {b} per view, {s}x{s} px, "
          f"{args.threads} threads, {device}")  # fmt: skip
    print(f"{'K':>5} {'cache MiB (C*K*D fp32)':>24}")
    for k in ks:
        print(f"{k:>5} {CLASSES * k * dim * 4 / 2**20:>24.1f}")

    ce = _objective(0, 0.0, dim, device)
    variants = [Variant("ce", lambda: step(ce, 1), b)]
    objs = {k: _objective(k, 0.05, dim, device) for k in ks}
    for k in ks:
        variants.append(Variant(f"icc K={k}", lambda k=k: step(objs[k], 2), 2 * b))  # type: ignore[misc]

    # the loss + cache alone, on fixed embeddings (B*2, D) that ask for a gradient
    feats = torch.randn(2 * b, dim, device=device, requires_grad=True)
    logits = torch.randn(2 * b, CLASSES, device=device)

    def loss_only(obj: TeacherObjective) -> None:
        batch = Batch(views, labels, torch.arange(b, device=device))
        out = {"features": feats, "logits": logits, "labels": labels.repeat(2), "batch": batch,
               "epoch": 0}  # fmt: skip
        value = obj._icc(out, {})
        value.backward()
        obj.after_step()

    def flat_loss(obj: TeacherObjective) -> None:
        """The loss as it was before: every anchor against all C*K slots, then masked."""
        bank, bank_labels = obj.queue.padded()
        z1, z2 = feats.chunk(2)
        value = icc_terms(z1, z2, labels, temperature=0.1, queue=bank, queue_labels=bank_labels,
                          anchor_mask=None).loss  # fmt: skip
        value.backward()
        obj.after_step()

    for k in ks:
        variants.append(Variant(f"loss+cache K={k}", lambda k=k: loss_only(objs[k]), 2 * b))  # type: ignore[misc]
        if k:
            variants.append(Variant(f"flat K={k}", lambda k=k: flat_loss(objs[k]), 2 * b))  # type: ignore[misc]
    times = interleave(variants, warmup=1, reps=args.reps, sync=sync)
    ce_ms = times["ce"].median * 1e3
    print(f"\n{'variant':<18} {'ms/step':>9} {'x CE step':>10} {'share of icc step':>18}")
    print(f"{'ce':<18} {ce_ms:>9.1f} {1.0:>10.2f}")
    for k in ks:
        icc = times[f"icc K={k}"].median * 1e3
        alone = times[f"loss+cache K={k}"].median * 1e3
        print(f"{'icc K=' + str(k):<18} {icc:>9.1f} {icc / ce_ms:>10.2f}")
        print(f"{'  loss+cache alone':<18} {alone:>9.2f} {'':>10} {100 * alone / icc:>17.2f}%")
        if k:
            flat = times[f"flat K={k}"].median * 1e3
            print(f"{'  flat (before)':<18} {flat:>9.2f} {'':>10} {'':>18} {flat / alone:.1f}x")
    base = times[f"icc K={ks[0]}"].median
    for k in ks[1:]:
        extra = times[f"icc K={k}"].median / base - 1
        print(f"icc step K={k} vs K={ks[0]}: {100 * extra:+.1f}%")


if __name__ == "__main__":
    main()
