"""What every benchmark case shares: settings, the recipe's optimiser, the real Trainer
built as `runs._fit` builds it, a pure-compute loop, synthetic CIFAR-100-shaped data, and
the table and ratio formatting.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from benchlib import Timing, pair_ratios
from torch import Tensor, nn

from icckd_cli.data import CIFAR_STATS, Batch, DataSpec, DeviceLoader, Split
from icckd_cli.settings.config import TeacherLoss
from icckd_cli.training.engine import Trainer, TrainState, autocast
from icckd_cli.training.objectives import TeacherObjective

BATCH = 64  # the recipe's batch size, used everywhere below
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
RECIPE_IMAGES = 240 * 50_000  # 240 epochs of the 50,000 CIFAR-100 training images
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Setup:
    """Settings shared by every case."""

    device: torch.device
    precision: str
    channels_last: bool
    steps: int
    reps: int
    warmup: int
    quick: bool
    max_other: float
    retries: int
    wait_quiet: float
    sync: Callable[[], None]
    results: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseOutput:
    """What a case prints and records."""

    lines: list[str]
    record: dict[str, Any]


# ----------------------------------------------------------------------------- helpers


def place(model: nn.Module, s: Setup, channels_last: bool | None = None) -> nn.Module:
    """Move a model the way runs._fit does (channels-last where asked)."""
    model = model.to(s.device)
    cl = s.channels_last if channels_last is None else channels_last
    return model.to(memory_format=torch.channels_last) if cl else model


def sgd(params: Any, **kw: Any) -> torch.optim.Optimizer:
    """The recipe's optimiser."""
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, **kw)


def teacher_objective(num_classes: int, feature_dim: int, icc_weight: float) -> TeacherObjective:
    """TeacherObjective with the config defaults; icc_weight 0 is the cross-entropy teacher."""
    loss = TeacherLoss(icc_weight=icc_weight)
    return TeacherObjective.from_config(loss, num_classes, feature_dim)


def make_trainer(
    model: nn.Module, objective: nn.Module, train: Split, test: Split, spec: DataSpec, s: Setup
) -> Trainer:
    """The real Trainer for one epoch over `train`, built as runs._fit builds it."""
    params = [p for p in [*model.parameters(), *objective.parameters()] if p.requires_grad]
    loader = DeviceLoader(
        train,
        spec,
        BATCH,
        views=objective.views,
        seed=0,
        padding=4,
        channels_last=s.channels_last,
    )
    return Trainer(
        model=model,
        objective=objective,  # type: ignore[arg-type]
        optimizer=sgd(params),
        loader=loader,
        test=test,
        spec=spec,
        epochs=1,
        base_lr=LR,
        decay_epochs=[],
        decay_rate=0.1,
        precision=s.precision,
        channels_last=s.channels_last,
    )


def epoch_seconds(trainer: Trainer) -> float:
    """One training epoch through Trainer.run; its own loop time (evaluation excluded)."""
    trainer.state = TrainState()
    trainer.run()
    return float(trainer.state.history[-1]["time"])


def first_batch(trainer: Trainer) -> Batch:
    """The first augmented batch the trainer's loader yields (for the pure-compute loop)."""
    return next(iter(trainer.loader.epoch(0)))


def pure_steps(
    model: nn.Module, x: Tensor, y: Tensor, opt: torch.optim.Optimizer, steps: int, s: Setup
) -> Callable[[], None]:
    """Forward, backward and SGD step on a batch already in place, `steps` times."""

    def run() -> None:
        for _ in range(steps):
            with autocast(s.device, s.precision):
                logits, _ = model(x, return_features=True)
                loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def synthetic_cifar100(n: int, s: Setup, seed: int = 0) -> tuple[DataSpec, Split]:
    """CIFAR-100 shapes: n random uint8 32x32 images, labels cycling over 100 classes."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 100
    labels = labels[torch.randperm(n, generator=g)]
    mean, std = CIFAR_STATS["cifar100"]
    spec = DataSpec("synthetic-cifar100", 100, [f"c{i}" for i in range(100)], mean, std, 32, True)
    return spec, Split(images, labels, torch.arange(n)).to(s.device)


def head(split: Split, n: int) -> Split:
    """The first n images of a split."""
    return Split(split.images[:n], split.labels[:n], split.index[:n])


def fmt_rate(rate: float) -> str:
    """Images per second: no decimals from 100 up, one below."""
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}"


def ratio_line(label: str, fast: Timing, slow: Timing) -> tuple[str, float]:
    """'label = R x' with R the median over repetitions of the speed ratio fast/slow.

    Each repetition's ratio compares runs made next to each other, so machine noise that
    comes and goes cancels better than in a ratio of two medians.
    """
    per = [p * fast.images / slow.images for p in pair_ratios(fast, slow)]
    r = statistics.median(per)
    return f"{label} = {r:.3f}x (median of per-run ratios, range {min(per):.3f}..{max(per):.3f})", r


def verdict(value: float, target: float, at_least: bool) -> str:
    """'met' or 'NOT met' against a target."""
    ok = value >= target if at_least else value <= target
    return "met" if ok else "NOT met"


def table(rows: list[tuple[str, Timing, str]]) -> list[str]:
    """Aligned rows: name, images/s at the median, at the best run, median seconds, note."""
    width = max(len(r[0]) for r in rows)
    out = [f"    {'variant':<{width}}  {'images/s':>9}  {'best':>9}  {'median s':>8}  note"]
    for name, t, note in rows:
        best = t.images / min(t.seconds)
        out.append(
            f"    {name:<{width}}  {fmt_rate(t.rate):>9}  {fmt_rate(best):>9}  "
            f"{t.median:8.3f}  {note}".rstrip()
        )
    return out


def micro(fn: Callable[[], Any], s: Setup, calls: int) -> float:
    """Median milliseconds of one call of fn, after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(calls):
        s.sync()
        start = time.perf_counter()
        fn()
        s.sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def micro_interleaved(fns: dict[str, Callable[[], Any]], s: Setup, calls: int) -> dict[str, float]:
    """Median milliseconds per call of each fn, the fns taking turns call by call."""
    for fn in fns.values():
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(calls):
        for name, fn in fns.items():
            s.sync()
            start = time.perf_counter()
            fn()
            s.sync()
            times[name].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}
