"""Cases (x) and (p): layout, precision, torch.compile and optimiser settings, and the
proposed code changes timed beside the code they would replace.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from benchlib import Variant, interleave
from cases_training import full_queue, icc_inputs
from harness import (
    BATCH,
    CaseOutput,
    Setup,
    epoch_seconds,
    head,
    make_trainer,
    micro_interleaved,
    place,
    pure_steps,
    ratio_line,
    sgd,
    synthetic_cifar100,
    table,
    teacher_objective,
)
from torch import Tensor
from variants import augment_two_gathers, normalize_fused

from icckd_cli import data as data_mod
from icckd_cli.methods.icc import icc_terms
from icckd_cli.methods.queue import ClassQueue
from icckd_cli.models import create_model
from icckd_cli.settings.config import TeacherLoss
from icckd_cli.training.engine import TrainState

# ----------------------------------------------------------------------------- (x)


def pure_variant(
    name: str, arch: str, s: Setup, *, cl: bool, precision: str, opt_kw: dict | None = None
) -> Variant:
    """A pure-compute variant with its own model copy, layout, precision and optimiser."""
    model = place(create_model(arch, 100), s, channels_last=cl)
    x = torch.randn(BATCH, 3, 32, 32, device=s.device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (BATCH,), device=s.device)
    sub = copy.copy(s)
    sub.precision = precision
    run = pure_steps(model, x, y, sgd(model.parameters(), **(opt_kw or {})), s.steps, sub)
    return Variant(name, run, s.steps * BATCH)


def case_layout(s: Setup, arch: str) -> CaseOutput:
    """Channels-last vs contiguous, pure compute."""
    prec = s.precision
    t = interleave(
        [
            pure_variant("channels-last", arch, s, cl=True, precision=prec),
            pure_variant("contiguous", arch, s, cl=False, precision=prec),
        ],
        s.warmup,
        s.reps,
        s.sync,
    )
    line, r = ratio_line("channels-last / contiguous", t["channels-last"], t["contiguous"])
    lines = [f"(x1) memory layout, {arch} pure compute, batch {BATCH}, precision {prec}"]
    lines += table([(k, v, "") for k, v in t.items()]) + [f"    {line}"]
    return CaseOutput(lines, {"ratio": r, **{k: v.rate for k, v in t.items()}})


def case_precision(s: Setup, arch: str) -> CaseOutput:
    """bf16 autocast vs fp32, pure compute, channels-last."""
    t = interleave(
        [
            pure_variant("fp32", arch, s, cl=s.channels_last, precision="fp32"),
            pure_variant("bf16 autocast", arch, s, cl=s.channels_last, precision="bf16"),
        ],
        s.warmup,
        s.reps,
        s.sync,
    )
    line, r = ratio_line("bf16 / fp32", t["bf16 autocast"], t["fp32"])
    lines = [f"(x2) precision, {arch} pure compute, batch {BATCH}, channels-last {s.channels_last}"]
    lines += table([(k, v, "") for k, v in t.items()]) + [f"    {line}"]
    return CaseOutput(lines, {"ratio": r, **{k: v.rate for k, v in t.items()}})


def compiled_variant(name: str, arch: str, s: Setup, mode: str | None) -> tuple[Variant, float]:
    """A pure-compute variant through torch.compile(model, mode), and its first step's seconds."""
    model = place(create_model(arch, 100), s)
    compiled = torch.compile(model, mode=mode)
    x = torch.randn(BATCH, 3, 32, 32, device=s.device)
    if s.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (BATCH,), device=s.device)
    opt = sgd(model.parameters())
    s.sync()
    start = time.perf_counter()
    pure_steps(compiled, x, y, opt, 1, s)()  # compiles forward and backward
    s.sync()
    first = time.perf_counter() - start
    return Variant(name, pure_steps(compiled, x, y, opt, s.steps, s), s.steps * BATCH), first


def case_compile(s: Setup, arch: str) -> CaseOutput:
    """torch.compile as `--compile` applies it (the model only): compile time and steady rate.

    On CUDA also mode="reduce-overhead" (CUDA graphs), which removes per-kernel launch cost.
    """
    modes: list[str | None] = [None] + (["reduce-overhead"] if s.device.type == "cuda" else [])
    variants = [pure_variant("eager", arch, s, cl=s.channels_last, precision=s.precision)]
    firsts = {}
    for mode in modes:
        name = "torch.compile" + (f" mode={mode}" if mode else "")
        v, firsts[name] = compiled_variant(name, arch, s, mode)
        variants.append(v)
    t = interleave(variants, s.warmup, s.reps, s.sync)
    step_s = t["eager"].median / s.steps
    lines = [f"(x3) torch.compile (model only, as --compile), {arch} pure compute, batch {BATCH}"]
    lines += table([(k, v, "") for k, v in t.items()])
    rec: dict[str, Any] = {}
    for name, first in firsts.items():
        line, r = ratio_line(f"{name} / eager", t[name], t["eager"])
        lines.append(
            f"    {line}; first compiled step took {first:.1f} s (compile cost about "
            f"{first - step_s:.1f} s)"
        )
        rec[name] = {"ratio": r, "first_step_s": first, "rate": t[name].rate}
    rec["eager"] = t["eager"].rate
    return CaseOutput(lines, rec)


def case_cudnn(s: Setup, arch: str) -> CaseOutput:
    """CUDA only: torch.backends.cudnn.benchmark on (what training sets) vs off."""

    def flagged(v: Variant, on: bool) -> Variant:
        def run() -> float | None:
            torch.backends.cudnn.benchmark = on
            return v.run()

        return Variant(v.name, run, v.images)

    on = pure_variant("cudnn.benchmark on", arch, s, cl=s.channels_last, precision=s.precision)
    off = pure_variant("cudnn.benchmark off", arch, s, cl=s.channels_last, precision=s.precision)
    before = torch.backends.cudnn.benchmark
    try:
        t = interleave([flagged(off, False), flagged(on, True)], s.warmup, s.reps, s.sync)
    finally:
        torch.backends.cudnn.benchmark = before
    line, r = ratio_line("on / off", t["cudnn.benchmark on"], t["cudnn.benchmark off"])
    lines = [f"(x5) cudnn.benchmark, {arch} pure compute, batch {BATCH}"]
    lines += table([(k, v, "") for k, v in t.items()]) + [f"    {line}"]
    return CaseOutput(lines, {"ratio": r, **{k: v.rate for k, v in t.items()}})


def case_optimizer(s: Setup, arch: str) -> CaseOutput:
    """SGD as runs._fit builds it (default) vs foreach=True vs fused=True: whole pure step."""
    kinds = {
        "SGD default": {},
        "SGD foreach=True": {"foreach": True},
        "SGD fused=True": {"fused": True},
    }
    variants = [
        pure_variant(k, arch, s, cl=s.channels_last, precision=s.precision, opt_kw=kw)
        for k, kw in kinds.items()
    ]
    t = interleave(variants, s.warmup, s.reps, s.sync)
    model = place(create_model(arch, 100), s)
    x = torch.randn(BATCH, 3, 32, 32, device=s.device)
    F.cross_entropy(model(x), torch.zeros(BATCH, dtype=torch.long, device=s.device)).backward()
    opts = {k: sgd(model.parameters(), **kw) for k, kw in kinds.items()}
    ms = micro_interleaved({k: o.step for k, o in opts.items()}, s, 30 if s.quick else 100)
    lines = [f"(x4) optimiser step, {arch} ({sum(1 for _ in model.parameters())} tensors)"]
    lines += table([(k, v, f"step() alone {ms[k]:.3f} ms") for k, v in t.items()])
    for k in list(kinds)[1:]:
        lines.append("    " + ratio_line(f"{k} / default", t[k], t["SGD default"])[0])
    return CaseOutput(lines, {"step_ms": ms, **{k: v.rate for k, v in t.items()}})


# ----------------------------------------------------------------------------- (p)


@torch.no_grad()
def push_before(queue: ClassQueue, z: Tensor, labels: Tensor) -> None:
    """ClassQueue.push as it was before the sync-free push, kept to time the change beside it."""
    k = queue.size
    z = F.normalize(z.detach().to(queue.bank.device, queue.bank.dtype), dim=1)
    labels = labels.detach().to(queue.bank.device).long()
    n = labels.shape[0]
    per_class = torch.bincount(labels, minlength=queue.num_classes)  # (C,)
    order = torch.sort(labels, stable=True).indices
    start = torch.cumsum(per_class, 0) - per_class
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(n, device=labels.device) - start[labels[order]]
    keep = rank >= per_class[labels] - k  # a boolean mask: nonzero() on the device
    lab, pos = labels[keep], (queue.pushed[labels[keep]] + rank[keep]) % k
    queue.bank[lab, pos] = z[keep]
    queue.pushed += per_class


def case_proposals(s: Setup) -> CaseOutput:
    """Candidate changes, each timed beside the code it would replace, outputs compared."""
    lines = ["(p) proposed changes, timed beside the current code (median ms per call)"]
    rec: dict[str, Any] = {}
    calls = 50 if s.quick else 200

    # P1: the loader's per-batch work
    spec, split = synthetic_cifar100(4096, s)
    g = torch.Generator().manual_seed(2)
    idx = torch.randperm(len(split), generator=g)[:BATCH].to(s.device)
    raw = split.images[idx]
    dy, dx = (torch.randint(0, 9, (BATCH,), generator=g).to(s.device) for _ in range(2))
    flip = (torch.rand(BATCH, generator=g) < 0.5).to(s.device)
    mean = torch.tensor(spec.mean, device=s.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=s.device).view(1, -1, 1, 1)
    cl = s.channels_last
    same_aug = torch.equal(
        data_mod.augment(raw, dy, dx, flip, 4), augment_two_gathers(raw, dy, dx, flip, 4)
    )
    a = data_mod.augment(raw, dy, dx, flip, 4)
    diff = (data_mod.normalize(a, mean, std, cl) - normalize_fused(a, mean, std, cl)).abs().max()
    ms = micro_interleaved(
        {
            "augment (current)": lambda: data_mod.augment(raw, dy, dx, flip, 4),
            "augment (two gathers)": lambda: augment_two_gathers(raw, dy, dx, flip, 4),
            "normalize (current)": lambda: data_mod.normalize(a, mean, std, cl),
            "normalize (fused)": lambda: normalize_fused(a, mean, std, cl),
        },
        s,
        calls,
    )
    lines.append("  P1 DeviceLoader per-batch work (batch 64, uint8 -> float):")
    lines += [f"      {k:<26} {v:8.3f} ms" for k, v in ms.items()]
    lines.append(
        f"      identical augment output: {same_aug}; normalize max abs difference {diff:.1e}"
    )
    rec["P1"] = {**ms, "same_augment": same_aug, "normalize_diff": float(diff)}

    # P2: the intra-class cache, read with padded() (fixed shape) instead of contents() (a
    # boolean mask), and pushed with scatters instead of bincount and boolean masks; on CUDA
    # a mask or bincount makes the host wait for the device
    dim = 64
    obj = teacher_objective(100, dim, TeacherLoss().icc_weight).to(s.device)
    full_queue(obj, s)
    out = icc_inputs(obj, dim, s)
    q = obj.queue
    z1, z2 = out["features"].detach().chunk(2)
    labels = out["batch"].labels
    qa, la = q.contents()
    qb, lb = q.padded()
    kw = {"temperature": obj.temperature}
    loss_a = icc_terms(z1, z2, labels, queue=qa, queue_labels=la, **kw).loss
    loss_b = icc_terms(z1, z2, labels, queue=qb, queue_labels=lb, **kw).loss
    before_q, now_q = copy.deepcopy(q), copy.deepcopy(q)
    push_z = torch.randn(2 * BATCH, dim, device=s.device)
    push_y = out["labels"]
    push_before(before_q, push_z, push_y)
    now_q.push(push_z, push_y)
    same_push = torch.equal(before_q.bank, now_q.bank) and torch.equal(
        before_q.pushed, now_q.pushed
    )
    work_q = copy.deepcopy(q)
    ms = micro_interleaved(
        {
            "read: contents() (before)": q.contents,
            "read: padded() (now)": q.padded,
            "push: bincount (before)": lambda: push_before(work_q, push_z, push_y),
            "push: scatters (now)": lambda: work_q.push(push_z, push_y),
        },
        s,
        calls,
    )
    lines.append("  P2 intra-class cache, K=64, 100 classes (on CUDA a mask or bincount waits):")
    lines += [f"      {k:<26} {v:8.3f} ms" for k, v in ms.items()]
    lines.append(
        f"      loss with contents() {float(loss_a):.6f}, with padded() {float(loss_b):.6f}; "
        f"identical cache after either push: {same_push}"
    )
    rec["P2"] = {**ms, "loss_contents": float(loss_a), "loss_padded": float(loss_b)}
    rec["P2"]["same_push"] = same_push

    # P3: the Trainer's per-step bookkeeping, copied, with the step counter made as before
    # (torch.tensor: a copy from host memory, which waits for the device on CUDA) and as now
    parts = {"loss": torch.tensor(2.3, device=s.device), "ce": torch.tensor(2.3, device=s.device)}

    def bookkeeping(make_step: Callable[[int], Tensor]) -> Callable[[], None]:
        sums: dict[str, Tensor] = {}
        bad = torch.full((2,), -1, dtype=torch.long, device=s.device)

        def run() -> None:
            nonlocal bad
            for k, v in parts.items():
                sums[k] = sums[k] + v.float() if k in sums else v.float().clone()
            finite = torch.stack([torch.isfinite(v).all() for v in parts.values()])
            first = (bad[0] < 0) & ~finite.all()
            here = torch.stack([make_step(7), (~finite).int().argmax()])
            bad = torch.where(first, here, bad)

        return run

    ms = micro_interleaved(
        {
            "torch.tensor(step) (before)": bookkeeping(lambda i: torch.tensor(i, device=s.device)),
            "torch.full((), step) (now)": bookkeeping(
                lambda i: torch.full((), i, dtype=torch.long, device=s.device)
            ),
        },
        s,
        calls,
    )
    lines.append("  P3 Trainer per-step bookkeeping (loss sums, NaN guard), 2 loss parts:")
    lines += [f"      {k:<26} {v:8.3f} ms" for k, v in ms.items()]
    rec["P3"] = ms
    if s.device.type == "cuda":
        lines += cuda_sync_report(s)
    return CaseOutput(lines, rec)


def cuda_sync_report(s: Setup) -> list[str]:
    """Which lines of a CE and an intra-class Trainer epoch make the host wait for the GPU."""
    out = ["  P4 host-device synchronisations in one Trainer epoch (sync debug mode), line xN:"]
    spec, train = synthetic_cifar100(8 * BATCH, s)
    for name, weight in (("cross-entropy", 0.0), ("intra-class", TeacherLoss().icc_weight)):
        model = place(create_model("resnet20", 100), s)
        objective = teacher_objective(100, model.feature_dim, weight).to(s.device)
        trainer = make_trainer(model, objective, train, head(train, 8), spec, s)
        epoch_seconds(trainer)  # warm-up outside the check
        counts: dict[str, int] = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                trainer.state = TrainState()
                trainer.run()
            finally:
                torch.cuda.set_sync_debug_mode(0)
        for w in caught:
            where = f"{Path(w.filename).name}:{w.lineno}"
            counts[where] = counts.get(where, 0) + 1
        steps = len(trainer.loader)
        listed = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"
        # a line listed about `steps` times waits for the GPU in every step
        out.append(f"      {name} Trainer.run, {steps} steps + evaluation: {listed}")
    return out
