"""One training loop for teachers and students, evaluation and output extraction.

The engine never prints: progress goes to a callback. Loss values stay on the device and
are read once per logging interval, so the step has no host-device synchronisation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

# Diverged and Interrupted live in errors.py, which distributed.py imports too; callers that
# import them from here still find them, as they find the device helpers and the schedule
from icckd_cli.base.errors import DataFileError, Diverged, Interrupted
from icckd_cli.base.events import Callback as Callback  # importers name it here too
from icckd_cli.data import DataSpec, DeviceLoader, Split, StreamLoader
from icckd_cli.training import distributed as dist
from icckd_cli.training.devices import autocast, effective_precision
from icckd_cli.training.devices import channels_last_on as channels_last_on
from icckd_cli.training.devices import resolve_device as resolve_device
from icckd_cli.training.devices import tune_backends as tune_backends
from icckd_cli.training.objectives import Objective
from icckd_cli.training.schedule import LrSchedule
from icckd_cli.training.schedule import lr_at as lr_at
from icckd_cli.training.scoring import logit_metrics, split_logits
from icckd_cli.training.scoring import predict as predict

CHECK_EVERY = 50  # steps between reads of the loss accumulators (NaN guard)


def evaluate(
    model: nn.Module,
    split: Split,
    spec: DataSpec,
    batch_size: int = 512,
    channels_last: bool = False,
    precision: str = "fp32",
    keep: list[Tensor] | None = None,
) -> dict[str, float]:
    """top1/top5 (percent), nll, ece and n over a split; `keep` receives the predicted labels
    (N,) on the CPU when given."""
    logits, labels = split_logits(model, split, spec, batch_size, channels_last, precision)
    if keep is not None:
        keep.append(logits.argmax(dim=1).cpu())
    return logit_metrics(logits, labels)


def best_so_far(best: dict[str, Any], record: dict[str, Any], on_val: bool) -> dict[str, Any]:
    """The best evaluated epoch after `record` (val top-1 when `on_val`; earlier wins ties)."""
    key = "val_top1" if on_val else "top1"
    if key not in record or (best and record[key] <= best[key]):
        return best
    # the test split at the best-validation epoch, and what chose it; a run that never reads
    # its test split (icckd tune's trials) has no test numbers here
    keys = ("top1", "top5", *(("nll", "val_top1", "val_top5", "val_nll") if on_val else ()))
    out = {"epoch": record["epoch"], **{k: record[k] for k in keys if k in record}}
    return {**out, "chosen_on": "val"} if on_val else out


@dataclass
class TrainState:
    """Where a run stands; enough with the modules and optimiser to continue exactly."""

    epoch: int = 0  # the epoch in progress (or next to start)
    step: int = 0  # batches of `epoch` already done
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)  # partial epoch loss sums
    best: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0


@dataclass
class Trainer:
    """Runs the epochs: objective -> backward -> step -> queue update -> eval -> log."""

    model: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    loader: DeviceLoader | StreamLoader  # in memory, or streamed: one interface
    test: Split | None  # None: the test split is never read (then `val` is evaluated alone)
    spec: DataSpec
    epochs: int
    base_lr: float
    decay_epochs: list[int]
    decay_rate: float
    schedule: str = "step"  # or "cosine" (LrSchedule)
    warmup_epochs: int = 0
    precision: str = "fp32"
    channels_last: bool = False
    eval_batch_size: int = 512
    callback: Callback = lambda event, info: None
    save_state: Callable[[TrainState], None] = lambda state: None
    save_every: int = 1
    eval_every: int = 1  # the last epoch is always evaluated
    stop_requested: Callable[[], bool] = lambda: False
    state: TrainState = field(default_factory=TrainState)
    eval_model: nn.Module | None = None  # the unwrapped model when training through DDP
    val: Any = None  # a validation split (Split or StreamSplit): best is chosen on it
    # the last epoch's test predictions (N,), float32 runs on process 0: predictions.npy
    test_predictions: Tensor | None = None

    def run(self) -> TrainState:
        """Train from `state` to the last epoch; returns the final state."""
        st = self.state
        device = (self.test if self.test is not None else self.val).device
        steps = len(self.loader)
        lr_of = self.lr_schedule()
        self.callback("start", {"epochs": self.epochs, "steps": steps, "epoch": st.epoch})
        while st.epoch < self.epochs:
            started = time.perf_counter()
            lr = self._set_lr(lr_of(st.epoch, st.step))
            self.model.train()
            self.objective.train()
            sums: dict[str, Tensor] = {
                k: torch.tensor(v, device=device) for k, v in st.sums.items()
            }
            bad = torch.full((2,), -1, dtype=torch.long, device=device)  # (step, part)
            names: list[str] = []
            images = 0  # this span's own: a resumed epoch's earlier steps were timed before
            batches = self.loader.epoch(st.epoch, st.step)
            while (batch := self._next(batches, st, sums, started)) is not None:
                lr = self._set_lr(lr_of(st.epoch, st.step))  # the record keeps the epoch's last
                with autocast(device, self.precision):
                    loss, parts = self.objective(self.model, batch, st.epoch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.objective.after_step()
                parts = {"loss": loss.detach(), **parts}
                # the named parts first: the total breaks whenever one of them does
                names = [*list(parts)[1:], "loss"]
                for k, v in parts.items():
                    sums[k] = sums[k] + v.float() if k in sums else v.float().clone()
                finite = torch.stack([torch.isfinite(parts[k]).all() for k in names])
                first = (bad[0] < 0) & ~finite.all()
                here = torch.stack(
                    [torch.full((), st.step, device=device), (~finite).int().argmax()]
                )
                bad = torch.where(first, here, bad)
                st.step += 1
                images += int(batch.labels.shape[0])
                self.callback("step", {"epoch": st.epoch, "step": st.step, "steps": steps})
                if st.step % CHECK_EVERY == 0 or st.step == steps:
                    self._check(bad, names, st)
                if self.stop_requested():
                    # never let a state with NaN in it replace the last good one
                    self._check(bad, names, st)
                    self._check_weights(st)
                    st.sums = {k: v.item() for k, v in sums.items()}
                    st.elapsed += time.perf_counter() - started
                    self.save_state(st)
                    raise Interrupted()
            self._check(bad, names, st)
            self._check_weights(st)
            record: dict[str, Any] = {"epoch": st.epoch + 1, "lr": lr}
            record.update({f"train_{k}": v.item() / max(st.step, 1) for k, v in sums.items()})
            record["time"] = time.perf_counter() - started
            record["images_per_s"] = images * self.loader.world / max(record["time"], 1e-9)
            if (st.epoch + 1) % self.eval_every == 0 or st.epoch + 1 == self.epochs:
                if self.test is not None:
                    record.update(self._evaluate(self.test, st.epoch + 1 == self.epochs))
                if self.val is not None:  # the test numbers of every epoch stay in history
                    record.update({f"val_{k}": v for k, v in self._evaluate(self.val).items()})
            st.history.append(record)
            st.best = best_so_far(st.best, record, on_val=self.val is not None)
            st.epoch, st.step, st.sums = st.epoch + 1, 0, {}
            st.elapsed += record["time"]
            self.callback("epoch", record)
            if self.save_every and st.epoch % self.save_every == 0 and st.epoch < self.epochs:
                self.save_state(st)
        self.callback("end", {"best": st.best})
        return st

    def _evaluate(self, split: Any, last: bool = False) -> dict[str, float]:
        """top1/top5/nll/ece of the model on a split (n dropped); `last`: keep the predicted
        labels as test_predictions (float32 runs only, as predictions.npy is float32)."""
        model = self.eval_model or self.model
        fp32 = effective_precision(torch.device(split.device), self.precision) == "fp32"
        keep: list[Tensor] | None = [] if last and fp32 else None
        # rank 0 evaluates and shares the numbers, so every rank keeps the same history
        metrics = dist.from_main(
            evaluate,
            model,
            split,
            self.spec,
            self.eval_batch_size,
            self.channels_last,
            self.precision,
            keep,
        )
        if keep:  # rank 0 alone filled it
            self.test_predictions = keep[0]
        metrics.pop("n", None)
        return metrics

    def lr_schedule(self) -> LrSchedule:
        """The run's learning-rate schedule over its epochs and steps."""
        return LrSchedule(
            self.base_lr,
            self.epochs,
            len(self.loader),
            self.decay_epochs,
            self.decay_rate,
            self.schedule,
            self.warmup_epochs,
        )

    def _set_lr(self, lr: float) -> float:
        """Give every parameter group this learning rate."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _next(
        self, batches: Iterator[Any], st: TrainState, sums: dict[str, Tensor], started: float
    ) -> Any:
        """The next batch, or None at the end of the epoch.

        A streamed file that cannot be read stops the run; alone, the state after the last
        finished step is saved first, so --resume continues once the file is fixed. Under
        torchrun the other ranks are mid-step, so the last periodic save is what remains.
        """
        try:
            return next(batches, None)
        except DataFileError:
            if not dist.is_distributed():
                self._check_weights(st)  # never let broken weights replace the last good state
                st.sums = {k: v.item() for k, v in sums.items()}
                st.elapsed += time.perf_counter() - started
                self.save_state(st)
            raise

    def _check(self, bad: Tensor, names: list[str], st: TrainState) -> None:
        """Stop with a clear message once any loss part went NaN or infinite."""
        who, (step, part) = dist.first_flagged(bad)  # every rank stops on any rank's NaN
        if step < 0:
            return
        name = names[part] if part < len(names) else "loss"
        where = f" on rank {who}" if dist.is_distributed() else ""
        raise Diverged(
            f"the loss part '{name}' became NaN or infinite at epoch {st.epoch + 1}, step "
            f"{step + 1}{where}; {self._advice(name)}",
            name,
            st.epoch + 1,
            step + 1,
        )

    def _check_weights(self, st: TrainState) -> None:
        """Stop before a checkpoint is written if a weight or buffer is NaN or infinite."""
        model = self.eval_model or self.model
        tensors = [*model.state_dict().values(), *self.objective.state_dict().values()]
        floats = [t for t in tensors if t.is_floating_point()]
        finite = not floats or bool(torch.stack([torch.isfinite(t).all() for t in floats]).all())
        if not dist.any_rank(not finite):  # buffers differ by rank: all stop if one breaks
            return
        raise Diverged(
            f"the weights became NaN or infinite in epoch {st.epoch + 1} (by step {st.step}) "
            f"while every loss part stayed finite; {self._advice('weights')}",
            "weights",
            st.epoch + 1,
            st.step,
        )

    def _advice(self, part: str) -> str:
        """What to lower: the learning rate, and the weight of the part that broke."""
        lr = self.optimizer.param_groups[0]["lr"]  # that of the last step taken
        weights = [f"--{t.name}-weight" for t in self.objective.terms if t.name != "ce"]
        if f"--{part}-weight" in weights:
            weights = [f"--{part}-weight"]
        also = f" or a lower {' / '.join(weights)}" if weights else ""
        return f"try a lower --lr (it was {lr:g}){also}"
