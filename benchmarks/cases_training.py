"""Cases (a) to (e): the training step against pure compute and against a reference loop,
the intra-class teacher, distillation, and evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from benchlib import Variant, interleave
from harness import (
    BATCH,
    CaseOutput,
    Setup,
    epoch_seconds,
    first_batch,
    head,
    make_trainer,
    micro,
    place,
    pure_steps,
    ratio_line,
    sgd,
    synthetic_cifar100,
    table,
    teacher_objective,
    verdict,
)
from torch import nn

from icckd_cli.data import CIFAR_STATS, Batch, DataSpec, Split, load_dataset
from icckd_cli.metrics.softlabels import SoftLabelAccumulator
from icckd_cli.models import create_model
from icckd_cli.settings.config import StudentLoss, TeacherLoss
from icckd_cli.training.engine import TrainState, autocast, evaluate, predict
from icckd_cli.training.objectives import DistillObjective, TeacherObjective

# ----------------------------------------------------------------------------- (a)


def case_a(s: Setup, arch: str, real: tuple[DataSpec, Split, Split]) -> CaseOutput:
    """Pure compute vs our full training step for one architecture."""
    spec, train_all, test_all = real
    steps = min(s.steps, len(train_all) // BATCH)
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(train_all), generator=g)[: steps * BATCH].to(s.device)
    train = Split(train_all.images[pick], train_all.labels[pick], torch.arange(len(pick)))
    train = train.to(s.device)
    model = place(create_model(arch, spec.num_classes), s)
    objective = teacher_objective(spec.num_classes, model.feature_dim, 0.0).to(s.device)
    trainer = make_trainer(model, objective, train, head(test_all, 8), spec, s)
    batch = first_batch(trainer)
    pure = pure_steps(model, batch.views[0], batch.labels, sgd(model.parameters()), steps, s)
    loader = trainer.loader
    direct_opt = sgd(model.parameters())

    def direct() -> None:
        # the Trainer's loop without its bookkeeping (sums, NaN guard, callbacks)
        for b in loader.epoch(0):
            with autocast(s.device, s.precision):
                loss, _ = objective(model, b, 0)
            direct_opt.zero_grad(set_to_none=True)
            loss.backward()
            direct_opt.step()
            objective.after_step()

    def loader_only() -> None:
        for b in loader.epoch(0):
            b.views[0].sum()  # something that uses the batch, as the model would

    images = steps * BATCH
    t = interleave(
        [
            Variant("pure", pure, images),
            Variant("ours", lambda: epoch_seconds(trainer), images),
            Variant("direct", direct, images),
            Variant("loader", loader_only, images),
        ],
        s.warmup,
        s.reps,
        s.sync,
    )
    line, r = ratio_line("ours / pure compute", t["ours"], t["pure"])
    # work the Trainer does once per epoch, which these short epochs pay in full
    check = getattr(trainer, "_check_weights", None)
    check_ms = micro(lambda: check(TrainState()), s, 20) if check else 0.0
    pure_ms = 1e3 * t["pure"].median / steps
    loader_ms = 1e3 * t["loader"].median / steps
    overhead = 1 - t["pure"].median / t["ours"].median
    lines = [
        f"(a) {arch}, batch {BATCH}, {steps} steps per run on {len(pick)} real CIFAR-10 images",
        *table(
            [
                ("pure compute (tensors in place)", t["pure"], f"{pure_ms:.1f} ms/step"),
                ("ours: Trainer epoch", t["ours"], "DeviceLoader+TeacherObjective(CE)+Trainer"),
                ("ours without Trainer bookkeeping", t["direct"], "loader+objective+step loop"),
                ("DeviceLoader alone", t["loader"], f"{loader_ms:.2f} ms/batch"),
            ]
        ),
        f"    {line}; target >= 0.90x: {verdict(r, 0.9, True)}",
        f"    pipeline overhead {100 * overhead:.1f}% of our step; the loader alone is "
        f"{100 * loader_ms / pure_ms:.1f}% of a pure step; the once-per-epoch weight check "
        f"({check_ms:.1f} ms) is {100 * check_ms / (steps * pure_ms):.1f}% of these "
        f"{steps}-step epochs, {100 * check_ms / (782 * pure_ms):.3f}% of a CIFAR epoch",
    ]
    s.results[f"train_rate_{arch}"] = t["ours"].rate
    rec = {k: {"rate": v.rate, "seconds": v.seconds} for k, v in t.items()}
    return CaseOutput(lines, {"arch": arch, "steps": steps, "ratio": r, **rec})


# ----------------------------------------------------------------------------- (b)


def case_b(s: Setup, arch: str, root: Path, workers: list[int]) -> CaseOutput:
    """Whole runs: ours (decode from cache, device-side augmentation) vs a reference loop."""
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision import transforms as T

    load_dataset("imagefolder", root)  # builds the decoded cache once, outside the timing
    mean, std = CIFAR_STATS["cifar10"]
    n_images = sum(1 for p in (root / "train").rglob("*.jpg"))

    def ours() -> float:
        start = time.perf_counter()
        data = load_dataset("imagefolder", root)
        train, test = data.train.to(s.device), head(data.test, 8).to(s.device)
        model = place(create_model(arch, data.spec.num_classes), s)
        objective = teacher_objective(data.spec.num_classes, model.feature_dim, 0.0)
        trainer = make_trainer(model, objective.to(s.device), train, test, data.spec, s)
        before = time.perf_counter() - start
        return before + epoch_seconds(trainer)

    def reference(num_workers: int) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            tf = T.Compose(
                [
                    T.RandomCrop(32, padding=4),
                    T.RandomHorizontalFlip(),
                    T.ToTensor(),
                    T.Normalize(mean, std),
                ]
            )
            train_set = datasets.ImageFolder(str(root / "train"), transform=tf)
            loader = DataLoader(
                train_set,
                batch_size=BATCH,
                shuffle=True,
                num_workers=num_workers,
                pin_memory=s.device.type == "cuda",
            )
            model = create_model(arch, len(train_set.classes)).to(s.device)
            opt = sgd(model.parameters())
            model.train()
            seen, correct, loss_sum = 0, 0, 0.0
            for x, y in loader:
                x, y = x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True)
                out = model(x)
                loss = F.cross_entropy(out, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                # the per-batch meters those codebases keep (each .item() waits for the device)
                loss_sum += loss.item() * y.numel()
                correct += int((out.argmax(1) == y).sum().item())
                seen += y.numel()
            s.sync()
            return time.perf_counter() - start

        return run

    variants = [Variant("ours", ours, n_images)]
    variants += [Variant(f"ref{w}", reference(w), n_images) for w in workers]
    t = interleave(variants, s.warmup, s.reps, s.sync)
    note = f"channels-last {s.channels_last}, precision {s.precision}"
    rows = [("ours: whole run (cache -> device -> epoch)", t["ours"], note)]
    for w in workers:
        rows.append(
            (f"reference, DataLoader num_workers={w}", t[f"ref{w}"], "fp32, default layout")
        )
    lines = [
        f"(b) {arch}, one epoch over {n_images} real CIFAR-10 JPEGs, batch {BATCH}, whole runs",
        *table(rows),
    ]
    rec: dict[str, Any] = {"arch": arch, "images": n_images}
    for w in workers:
        line, r = ratio_line(f"ours / reference(num_workers={w})", t["ours"], t[f"ref{w}"])
        target = 4.0 if s.device.type == "cuda" else 1.5
        lines.append(f"    {line}; target >= {target:.1f}x: {verdict(r, target, True)}")
        rec[f"ratio_workers_{w}"] = r
    rec.update({k: {"rate": v.rate, "seconds": v.seconds} for k, v in t.items()})
    return CaseOutput(lines, rec)


# ----------------------------------------------------------------------------- (c)


def full_queue(objective: TeacherObjective, s: Setup) -> None:
    """Fill every class's cache: the steady state of a long run."""
    q = objective.queue
    z = F.normalize(torch.randn(q.num_classes * q.size, q.dim, device=s.device), dim=1)
    q.push(z, torch.arange(q.num_classes, device=s.device).repeat_interleave(q.size))


def icc_inputs(objective: TeacherObjective, dim: int, s: Setup) -> dict[str, Any]:
    """What TeacherObjective._icc reads, as leaf tensors of the real shapes (2B rows)."""
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 100, (BATCH,), generator=g).to(s.device)
    feats = torch.randn(2 * BATCH, dim, generator=g).to(s.device).requires_grad_(True)
    logits = (3 * torch.randn(2 * BATCH, 100, generator=g)).to(s.device)  # some pass the gate
    batch = Batch([], labels, torch.arange(BATCH, device=s.device))
    return {"features": feats, "logits": logits, "labels": labels.repeat(2), "batch": batch}


def case_c(s: Setup, arch: str) -> CaseOutput:
    """Intra-class two-view step vs cross-entropy step, and the loss + cache cost alone."""
    steps = s.steps
    spec, train = synthetic_cifar100(max(steps * BATCH, 2 * BATCH), s)
    test = head(train, 8)
    model = place(create_model(arch, 100), s)
    ce = teacher_objective(100, model.feature_dim, 0.0).to(s.device)
    icc = teacher_objective(100, model.feature_dim, TeacherLoss().icc_weight).to(s.device)
    full_queue(icc, s)
    t_ce = make_trainer(model, ce, train, test, spec, s)
    t_icc = make_trainer(model, icc, train, test, spec, s)
    images = len(t_ce.loader) * BATCH
    two = first_batch(t_icc)
    x2, y2 = torch.cat(two.views), two.labels.repeat(2)  # (2B, 3, H, W), (2B,)
    pure2 = pure_steps(model, x2, y2, sgd(model.parameters()), len(t_icc.loader), s)
    t = interleave(
        [
            Variant("ce", lambda: epoch_seconds(t_ce), images),
            Variant("icc", lambda: epoch_seconds(t_icc), images),
            Variant("pure2", pure2, images),
        ],
        s.warmup,
        s.reps,
        s.sync,
    )
    line, r = ratio_line("intra-class step time / cross-entropy step time", t["ce"], t["icc"])
    line2, r2 = ratio_line("intra-class step / pure compute on both views", t["icc"], t["pure2"])
    step_ms = 1e3 * t["icc"].median / len(t_icc.loader)

    # the loss and the cache alone, on leaf tensors of the real shapes
    out = icc_inputs(icc, model.feature_dim, s)
    q = icc.queue

    def loss_fwd_bwd() -> None:
        out["features"].grad = None
        icc._icc(out, {}).backward()
        icc._pending = None

    icc._icc(out, {})
    pending = icc._pending

    def push() -> None:
        icc._pending = pending
        icc.after_step()

    calls = 20 if s.quick else 60
    ms = {
        "queue.padded() (the cache read)": micro(q.padded, s, calls),
        "_icc forward (margin, cache, icc_terms)": micro(lambda: icc._icc(out, {}), s, calls),
        "_icc forward + backward": micro(loss_fwd_bwd, s, calls),
        "cache push (after_step)": micro(push, s, calls),
    }
    total = ms["_icc forward + backward"] + ms["cache push (after_step)"]
    share = total / step_ms
    width = max(len(k) for k in ms)
    lines = [
        f"(c) {arch} teacher, CIFAR-100 shapes (100 classes), batch {BATCH}, cache K="
        f"{q.size} per class (full), {len(t_ce.loader)} steps per run",
        *table(
            [
                ("cross-entropy teacher step (1 view)", t["ce"], "TeacherObjective(icc 0)"),
                ("intra-class teacher step (2 views)", t["icc"], f"{step_ms:.1f} ms/step"),
                ("pure compute on 2 x 64 images", t["pure2"], "both views, CE only, in place"),
            ]
        ),
        f"    {line}; target <= 2.10x: {verdict(r, 2.1, False)}",
        f"    {line2} (what the loader, loss, cache and Trainer add to two views' compute)",
        "    loss + cache alone (median ms per step):",
        *[f"      {k:<{width}}  {v:8.3f} ms" for k, v in ms.items()],
        f"      loss fwd+bwd + push = {total:.2f} ms = {100 * share:.2f}% of the two-view step; "
        f"target <= 5%: {verdict(share, 0.05, False)}",
    ]
    s.results[f"icc_step_ms_{arch}"] = step_ms
    rec = {"arch": arch, "ratio": r, "ratio_pure2": r2, "loss_cache_share": share, "micro_ms": ms}
    rec.update({k: {"rate": v.rate, "seconds": v.seconds} for k, v in t.items()})
    return CaseOutput(lines, rec)


# ----------------------------------------------------------------------------- (d)


def case_d(s: Setup, teacher_arch: str, student_arch: str) -> CaseOutput:
    """Distillation step (frozen teacher + student, KD) vs the student alone."""
    spec, train = synthetic_cifar100(s.steps * BATCH, s)
    test = head(train, 8)
    teacher = place(create_model(teacher_arch, 100), s)
    student = place(create_model(student_arch, 100), s)
    cfg = StudentLoss()
    kd = DistillObjective.from_config(cfg, teacher, student.feature_dim, len(train), dkd_warmup=1)
    kd = kd.to(s.device)
    alone = teacher_objective(100, student.feature_dim, 0.0).to(s.device)
    t_kd = make_trainer(student, kd, train, test, spec, s)
    t_alone = make_trainer(student, alone, train, test, spec, s)
    x = first_batch(t_kd).views[0]
    steps = len(t_kd.loader)

    def teacher_forward() -> None:
        for _ in range(steps):
            with torch.inference_mode(), autocast(s.device, s.precision):
                teacher(x, return_features=True)

    images = steps * BATCH
    t = interleave(
        [
            Variant("alone", lambda: epoch_seconds(t_alone), images),
            Variant("kd", lambda: epoch_seconds(t_kd), images),
            Variant("teacher", teacher_forward, images),
        ],
        s.warmup,
        s.reps,
        s.sync,
    )
    line, r = ratio_line("distillation step time / student-alone step time", t["alone"], t["kd"])
    expected = (t["alone"].median + t["teacher"].median) / t["alone"].median
    lines = [
        f"(d) {teacher_arch} teacher (frozen, inference mode) -> {student_arch} student, KD "
        f"(ce {cfg.resolved_weights()['ce_weight']}, kd {cfg.resolved_weights()['kd_weight']}, "
        f"T {cfg.kd_temperature}), 100 classes, {steps} steps per run",
        *table(
            [
                ("student alone (cross-entropy)", t["alone"], ""),
                ("distillation step", t["kd"], "DistillObjective + Trainer"),
                ("teacher forward alone", t["teacher"], "inference mode"),
            ]
        ),
        f"    {line}; student step + teacher forward would be {expected:.3f}x, so the KD "
        f"terms and bookkeeping add {100 * (r - expected) / expected:+.1f}%",
    ]
    rec = {"ratio": r, "expected": expected}
    rec.update({k: {"rate": v.rate, "seconds": v.seconds} for k, v in t.items()})
    return CaseOutput(lines, rec)


# ----------------------------------------------------------------------------- (e)


def case_e(s: Setup, archs: list[str]) -> CaseOutput:
    """engine.evaluate and the inspect-softlabels pass, channels-last (now) and contiguous.

    The Trainer always evaluated channels-last; `icckd eval` and `inspect-softlabels` ran
    contiguous before and channels-last now (where training would).
    """
    n = 1024 if s.quick else 2048
    spec, split = synthetic_cifar100(n, s)
    layouts = {"channels-last": True, "contiguous": False}
    variants = []
    for arch in archs:
        for layout, cl in layouts.items():
            model = place(create_model(arch, 100), s, channels_last=cl)

            def run(model: nn.Module = model, cl: bool = cl) -> None:
                evaluate(model, split, spec, 512, channels_last=cl, precision=s.precision)

            variants.append(Variant(f"{arch} evaluate {layout}", run, n))
    arch = archs[0]
    for layout, cl in layouts.items():
        model = place(create_model(arch, 100), s, channels_last=cl)

        def inspect(model: nn.Module = model, cl: bool = cl) -> None:
            acc = SoftLabelAccumulator(100, model.feature_dim)  # type: ignore[arg-type]
            for logits, feats, labels in predict(model, split, spec, 512, cl, s.precision):
                acc.update(logits, feats, labels)
            acc.compute()

        variants.append(Variant(f"{arch} inspect {layout}", inspect, n))
    t = interleave(variants, s.warmup, s.reps, s.sync)
    lines = [f"(e) engine.evaluate and the inspect-softlabels pass over {n} images (100 classes)"]
    lines += table([(k, v, "eval batch 512") for k, v in t.items()])
    rec: dict[str, Any] = {k: {"rate": v.rate, "seconds": v.seconds} for k, v in t.items()}
    for name in [f"{a} evaluate" for a in archs] + [f"{arch} inspect"]:
        line, r = ratio_line(
            f"{name}: channels-last (now) / contiguous (before, eval and inspect-softlabels)",
            t[f"{name} channels-last"],
            t[f"{name} contiguous"],
        )
        lines.append(f"    {line}")
        rec[f"ratio {name}"] = r
    for a in archs:
        train_rate = s.results.get(f"train_rate_{a}")
        if train_rate:
            eval_s = 10_000 / t[f"{a} evaluate channels-last"].rate
            train_s = 50_000 / train_rate
            lines.append(
                f"    {a}: a CIFAR-100 epoch (50,000 train + 10,000 test images) would spend "
                f"{100 * eval_s / (eval_s + train_s):.1f}% of its time evaluating"
            )
    return CaseOutput(lines, rec)
