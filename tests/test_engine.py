"""The engine: schedule, evaluation, devices, and the NaN guard around checkpoints."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icckd_cli.base.errors import UsageError
from icckd_cli.data import DataSpec, DeviceLoader, Split
from icckd_cli.training.engine import (
    Diverged,
    LrSchedule,
    Trainer,
    TrainState,
    best_so_far,
    channels_last_on,
    evaluate,
    lr_at,
    predict,
    resolve_device,
    tune_backends,
)
from icckd_cli.training.objectives import Objective

SPEC = DataSpec("toy", 6, list("abcdef"), [0.0] * 3, [1.0] * 3, 4, False)


def test_lr_at_steps_down_at_each_decay_epoch() -> None:
    lrs = [lr_at(e, 0.05, [6, 8, 9], 0.1) for e in range(10)]
    assert lrs == pytest.approx([0.05] * 6 + [0.005] * 2 + [0.0005, 0.00005])
    assert lr_at(100, 0.05, [], 0.1) == 0.05


def test_schedule_warms_up_then_follows_the_cosine_to_zero() -> None:
    """4 epochs of 5 steps, 2 warm-up epochs: 10 ramp steps, then 10 of the cosine."""
    lr = LrSchedule(0.1, epochs=4, steps=5, decay_epochs=[], decay_rate=0.1, kind="cosine",
                    warmup_epochs=2)  # fmt: skip
    assert [lr(0, s) for s in range(5)] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    assert lr(1, 4) == pytest.approx(0.1)  # the tenth step reaches the peak
    assert lr(2, 0) == 0.1  # the cosine's first step: cos(0)
    assert lr(3, 0) == pytest.approx(0.05)  # its midpoint, 5 of 10: (1 + cos(pi/2)) / 2
    assert lr(3, 4) == pytest.approx(0.1 * (1 + math.cos(math.pi * 0.9)) / 2)  # 0.00245 > 0
    assert lr(3, 4) > 0
    no_warmup = LrSchedule(0.1, 4, 5, [], 0.1, "cosine")
    assert no_warmup(0, 0) == 0.1 and no_warmup(2, 0) == pytest.approx(0.05)


def test_step_schedule_is_the_multi_step_rule_after_its_warm_up() -> None:
    plain = LrSchedule(0.05, 10, 3, [6, 8, 9], 0.1)
    assert all(plain(e, s) == lr_at(e, 0.05, [6, 8, 9], 0.1) for e in range(10) for s in range(3))
    warm = LrSchedule(0.05, 10, 3, [1], 0.1, warmup_epochs=2)  # a decay inside the warm-up
    assert [warm(0, s) for s in range(3)] == pytest.approx([0.05 / 6, 0.1 / 6, 0.15 / 6])
    assert warm(1, 0) == pytest.approx(0.005 * 4 / 6) and warm(2, 0) == pytest.approx(0.005)


class Lookup(nn.Module):
    """Returns row i of a fixed logit table for the image whose first pixel is i."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x: Tensor, return_features: bool = False) -> Any:
        rows = (x[:, 0, 0, 0] * 255).round().long()  # (B,)
        logits = self.table[rows]  # (B, C)
        return (logits, x.flatten(1)) if return_features else logits


def split_of(n: int, labels: list[int]) -> Split:
    """n 4x4 images whose first pixel is their index."""
    images = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return Split(images, torch.tensor(labels))


def test_evaluate_on_known_logits() -> None:
    big = 20.0
    table = torch.zeros(4, 6)
    table[0, 0] = big  # label 0: right
    table[1, 1] = big  # label 1: right
    table[2, 3], table[2, 2] = big, 10.0  # label 2: second guess, still in the top 5
    table[3, 0], table[3, 5] = big, -10.0  # label 5: ranked last
    model = Lookup(table).train()
    m = evaluate(model, split_of(4, [0, 1, 2, 5]), SPEC, batch_size=3)
    assert m["n"] == 4
    assert m["top1"] == pytest.approx(50.0)
    assert m["top5"] == pytest.approx(75.0)
    # NLL: -log softmax at the label, by hand
    z_hit = math.exp(big) + 5
    z_2 = math.exp(big) + math.exp(10.0) + 4
    z_5 = math.exp(big) + math.exp(-10.0) + 4
    nll = (2 * (math.log(z_hit) - big) + (math.log(z_2) - 10.0) + (math.log(z_5) + 10.0)) / 4
    assert m["nll"] == pytest.approx(nll, rel=1e-5)
    # every confidence is ~1 (one bin), accuracy 1/2: ECE = mean(confidence) - 1/2
    conf = [math.exp(big) / z_hit] * 2 + [math.exp(big) / z_2, math.exp(big) / z_5]
    assert m["ece"] == pytest.approx(sum(conf) / 4 - 0.5, abs=1e-6)
    assert model.training  # evaluation puts the model back as it found it


def test_predict_yields_in_order() -> None:
    table = torch.eye(6)[:5]
    got = list(predict(Lookup(table), split_of(5, [0, 1, 2, 3, 4]), SPEC, batch_size=2))
    assert [len(y) for _, _, y in got] == [2, 2, 1]
    assert torch.equal(torch.cat([lg for lg, _, _ in got]), table)


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    # the machine's accelerators are pinned, so every branch runs on any machine
    cuda, mps = [False], [False]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda[0])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda[0] else 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps[0])
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")  # neither CUDA nor MPS
    mps[0] = True
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_device("mps") == torch.device("mps")
    cuda[0] = True
    assert resolve_device("auto") == torch.device("cuda")  # CUDA first
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    refused = {
        "gpu": "unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps",
        "cuda:x": "unknown device 'cuda:x'; use auto, cpu, cuda, cuda:N or mps",
        "meta": "unknown device 'meta'; use auto, cpu, cuda, cuda:N or mps",
        "cuda:1": "--device cuda:1: there are only 1 CUDA devices",
    }
    for name, message in refused.items():
        with pytest.raises(UsageError) as exc:
            resolve_device(name)
        assert exc.value.message == message
    cuda[0] = mps[0] = False
    with pytest.raises(UsageError) as exc:
        resolve_device("cuda")
    assert (
        exc.value.message == "--device cuda asked for CUDA but none is available; use --device cpu"
    )
    with pytest.raises(UsageError) as exc:
        resolve_device("mps")
    assert exc.value.message == "--device mps: Apple's MPS is not available here; use --device cpu"


def test_channels_last_where_asked_but_not_on_mps() -> None:
    assert channels_last_on(torch.device("cpu"), True)
    assert not channels_last_on(torch.device("cpu"), False)
    assert not channels_last_on(torch.device("mps"), True)


@pytest.fixture
def backend_flags() -> Any:
    """Restore cuDNN's and the deterministic-algorithms switches after a test."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    det = torch.are_deterministic_algorithms_enabled()
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
    torch.use_deterministic_algorithms(det)


def test_cudnn_benchmark_on_cuda_only_and_not_when_deterministic(backend_flags: Any) -> None:
    torch.backends.cudnn.benchmark = False
    tune_backends(torch.device("cpu"))
    assert not torch.backends.cudnn.benchmark  # the flag only matters to CUDA
    torch.use_deterministic_algorithms(True)
    tune_backends(torch.device("cuda"))  # only sets a flag: no GPU needed
    assert not torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = True
    tune_backends(torch.device("cuda"))
    assert not torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic = False
    tune_backends(torch.device("cuda"))
    assert torch.backends.cudnn.benchmark


# ----------------------------------------------------------------------------- NaN guard


class Toy(nn.Module):
    """A linear classifier over flattened 4x4 images, plus an unused buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(48, 6)
        self.register_buffer("stat", torch.zeros(1))

    def forward(self, x: Tensor, return_features: bool = False) -> Any:
        f = x.flatten(1)
        return (self.fc(f), f) if return_features else self.fc(f)


class Boom(Objective):
    """CE plus a 'kd' term that turns NaN at one (epoch, call)."""

    def __init__(self, at: tuple[int, int] | None) -> None:
        super().__init__()
        self.at, self.calls = at, 0
        self.add("ce", 1.0, lambda out, stats: F.cross_entropy(out["logits"], out["labels"]))
        self.add("kd", 0.5, self._kd)

    def _kd(self, out: dict[str, Any], stats: dict[str, Tensor]) -> Tensor:
        self.calls += 1
        zero = out["logits"].mean() * 0
        return zero + math.nan if (out["epoch"], self.calls) == self.at else zero


def trainer(objective: Objective, saved: list[TrainState], **kw: Any) -> Trainer:
    """Three epochs of 3 steps over 20 toy images, recording each state saved."""
    torch.manual_seed(0)
    train = split_of(20, [i % 6 for i in range(20)])
    train.index = torch.arange(20)
    loader = DeviceLoader(train, SPEC, 8, padding=0)
    model = Toy()
    return Trainer(
        model=model,
        objective=objective,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loader=loader,
        test=split_of(6, list(range(6))),
        spec=SPEC,
        epochs=3,
        base_lr=0.1,
        decay_epochs=[],
        decay_rate=0.1,
        save_state=lambda st: saved.append(TrainState(st.epoch, st.step)),
        **kw,
    )


def test_healthy_run_saves_after_each_epoch_but_the_last() -> None:
    saved: list[TrainState] = []
    st = trainer(Boom(None), saved).run()
    assert [(s.epoch, s.step) for s in saved] == [(1, 0), (2, 0)]
    assert st.epoch == 3 and len(st.history) == 3
    assert set(st.history[0]) >= {"train_loss", "train_ce", "train_kd", "top1", "lr"}


def test_every_step_trains_at_its_scheduled_lr() -> None:
    used: list[float] = []
    run = trainer(Boom(None), [], schedule="cosine", warmup_epochs=1,
                  callback=lambda e, i: used.append(run.optimizer.param_groups[0]["lr"])
                  if e == "step" else None)  # fmt: skip
    st = run.run()
    lr = LrSchedule(0.1, epochs=3, steps=3, decay_epochs=[], decay_rate=0.1, kind="cosine",
                    warmup_epochs=1)  # fmt: skip
    assert used == [lr(e, s) for e in range(3) for s in range(3)]
    assert used[:4] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1])
    assert [r["lr"] for r in st.history] == [used[2], used[5], used[8]]  # each epoch's last


def test_a_resumed_epoch_counts_only_the_images_it_trained_on() -> None:
    # 20 images in batches of 8, 8 and 4: resumed after its first step, the last epoch
    # trains on 8 + 4 images, and its throughput is those over the span timed
    (record,) = trainer(Boom(None), [], state=TrainState(2, 1)).run().history
    assert record["images_per_s"] * record["time"] == pytest.approx(12)
    (*_, whole) = trainer(Boom(None), []).run().history
    assert whole["images_per_s"] * whole["time"] == pytest.approx(20)  # the last batch's 4


def test_nan_names_the_part_and_saves_nothing_after_it() -> None:
    saved: list[TrainState] = []
    boom = Boom((1, 5))  # epoch 2, its second step (3 calls per epoch)
    with pytest.raises(Diverged) as exc:
        trainer(boom, saved).run()
    assert exc.value.message == (
        "the loss part 'kd' became NaN or infinite at epoch 2, step 2; try a lower --lr "
        "(it was 0.1) or a lower --kd-weight"
    )
    assert (exc.value.part, exc.value.epoch, exc.value.step, exc.value.exit_code) == ("kd", 2, 2, 1)
    assert [(s.epoch, s.step) for s in saved] == [(1, 0)]  # the last good state only


def test_interrupt_after_nan_does_not_save_the_broken_state() -> None:
    saved: list[TrainState] = []
    steps = iter(range(100))
    # NaN at step 1 of epoch 2, Ctrl-C at step 2: before the end-of-epoch check
    stop = trainer(Boom((1, 4)), saved, stop_requested=lambda: next(steps) == 4)
    with pytest.raises(Diverged, match="'kd' became NaN"):
        stop.run()
    assert [(s.epoch, s.step) for s in saved] == [(1, 0)]


def test_weights_that_overflow_with_finite_losses_are_caught() -> None:
    saved: list[TrainState] = []

    def poison(event: str, info: dict[str, Any]) -> None:
        # a buffer the loss never reads, as batch norm's running statistics in train mode
        if event == "step" and (info["epoch"], info["step"]) == (1, 3):
            run.model.stat.fill_(math.inf)  # type: ignore[operator]

    run = trainer(Boom(None), saved, callback=poison)
    with pytest.raises(Diverged, match=r"^the weights became NaN or infinite in epoch 2 \(by"):
        run.run()
    assert [(s.epoch, s.step) for s in saved] == [(1, 0)]


# ----------------------------------------------------------------------------- best epoch


def test_best_is_chosen_on_validation_and_reports_the_test_split_there() -> None:
    rows = [
        {"epoch": 1, "top1": 50.0, "top5": 90.0, "nll": 1.5, "val_top1": 40.0,
         "val_top5": 85.0, "val_nll": 1.7},
        {"epoch": 2, "lr": 0.1},  # not evaluated (--eval-every)
        {"epoch": 3, "top1": 60.0, "top5": 92.0, "nll": 1.2, "val_top1": 80.0,
         "val_top5": 95.0, "val_nll": 0.9},
        {"epoch": 4, "top1": 70.0, "top5": 93.0, "nll": 1.0, "val_top1": 80.0,
         "val_top5": 96.0, "val_nll": 0.8},  # a tie on validation: the earlier epoch stays
        {"epoch": 5, "top1": 75.0, "top5": 94.0, "nll": 0.9, "val_top1": 60.0,
         "val_top5": 90.0, "val_nll": 1.1},
    ]  # fmt: skip
    best: dict[str, Any] = {}
    for row in rows:
        best = best_so_far(best, row, on_val=True)
    assert best == {
        "epoch": 3, "top1": 60.0, "top5": 92.0, "nll": 1.2, "val_top1": 80.0,
        "val_top5": 95.0, "val_nll": 0.9, "chosen_on": "val",
    }  # fmt: skip
    on_test: dict[str, Any] = {}
    for row in rows:
        on_test = best_so_far(on_test, row, on_val=False)
    assert on_test == {"epoch": 5, "top1": 75.0, "top5": 94.0}  # the flattering pick


def test_trainer_evaluates_both_splits_and_keeps_the_best_validation_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    val = split_of(6, list(range(6)))
    scripted = {"test": iter([50.0, 60.0, 70.0]), "val": iter([40.0, 80.0, 60.0])}
    seen: list[str] = []

    def scripted_evaluate(model: nn.Module, split: Split, *args: Any) -> dict[str, float]:
        which = "val" if split is val else "test"
        seen.append(which)
        top1 = next(scripted[which])
        return {"top1": top1, "top5": top1 + 1, "nll": 100 / top1, "ece": 0.1, "n": 6}

    monkeypatch.setattr("icckd_cli.training.engine.evaluate", scripted_evaluate)
    ends: list[dict[str, Any]] = []
    run = trainer(
        Boom(None), [], val=val, callback=lambda e, i: ends.append(i) if e == "end" else None
    )
    st = run.run()
    assert seen == ["test", "val"] * 3
    assert [(r["top1"], r["val_top1"]) for r in st.history] == [(50, 40), (60, 80), (70, 60)]
    assert st.history[1]["val_nll"] == 100 / 80 and "val_n" not in st.history[1]
    assert st.best["epoch"] == 2 and st.best["top1"] == 60.0 and st.best["val_top1"] == 80.0
    assert ends == [{"best": st.best}]
    # the same numbers without a validation split: best follows the test split (epoch 3)
    scripted = {"test": iter([50.0, 60.0, 70.0])}
    assert trainer(Boom(None), []).run().best == {"epoch": 3, "top1": 70.0, "top5": 71.0}
