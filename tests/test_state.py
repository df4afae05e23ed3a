"""The resumable state: state.safetensors holds everything, and a resumed run is bit for bit.

An interrupt is a real SIGINT, sent from the progress callback at a chosen step and caught
by the run's own signal handler; resuming and refusing go through the real CLI. The shared
`reference` and `interrupted` runs are built in conftest.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from icckd_cli.base.checkpoint import load_tensors, read_metadata
from icckd_cli.base.errors import UsageError
from icckd_cli.commands import runs
from icckd_cli.data import Batch
from icckd_cli.models import create_model
from icckd_cli.presentation.progress import TrainingProgress
from icckd_cli.settings.config import TeacherLoss, TrainTeacherConfig, build
from icckd_cli.settings.recipes import make_optimizer
from icckd_cli.training.engine import Interrupted, TrainState
from icckd_cli.training.objectives import TeacherObjective
from icckd_cli.training.state import restore_state, save_state
from tests.helpers import (
    INTERRUPTED,
    STUDENT,
    TEACHER,
    args,
    assert_same_weights,
    check_fails,
    copy,
    history,
    icckd,
    ok,
    one_error,
    sigint_at,
)

Capsys = pytest.CaptureFixture[str]
Parts = tuple[torch.nn.Module, TeacherObjective, torch.optim.Optimizer]
RUN = {"arch": "resnet8", "num_classes": 10, "config": {"epochs": 2}}


def parts(seed: int) -> Parts:
    """A tiny teacher, its intra-class objective (cache of 4 a class) and SGD with momentum."""
    torch.manual_seed(seed)
    model = create_model("resnet8", 10)
    loss = TeacherLoss(icc_weight=0.1, margin=-1, queue_size=4)
    objective = TeacherObjective.from_config(loss, 10, model.feature_dim)
    opt = torch.optim.SGD([*model.parameters(), *objective.parameters()], lr=0.1, momentum=0.9)
    return model, objective, opt


def one_step(
    model: torch.nn.Module, objective: TeacherObjective, opt: torch.optim.Optimizer
) -> None:
    """A training step on random images: momentum buffers and a filled cache to keep."""
    views = [torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8)]  # (B, 3, H, W) twice
    loss, _ = objective(model, Batch(views, torch.arange(8) % 10, torch.arange(8)), 0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    objective.after_step()


def test_state_round_trip_restores_every_tensor(tmp_path: Path) -> None:
    saved = parts(0)
    one_step(*saved)
    where = TrainState(epoch=1, step=3, sums={"loss": 1.5}, best={"top1": 0.5}, elapsed=2.0)
    save_state(tmp_path, where, *saved, RUN, {})
    after_save = torch.rand(4)  # the generator as it was saved
    meta = read_metadata(tmp_path / "state.safetensors")
    assert (meta["kind"], meta["arch"], meta["num_classes"]) == ("state", "resnet8", 10)
    fresh = parts(1)
    assert restore_state(tmp_path, *fresh, {}) == where
    assert torch.equal(torch.rand(4), after_save)
    for a, b in zip(saved[:2], fresh[:2], strict=True):  # weights, heads and the cache
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    momentum = {i: s["momentum_buffer"] for i, s in saved[2].state_dict()["state"].items()}
    again = {i: s["momentum_buffer"] for i, s in fresh[2].state_dict()["state"].items()}
    assert momentum.keys() == again.keys() and momentum
    assert all(torch.equal(momentum[i], again[i]) for i in momentum)


def test_adamw_state_round_trip(tmp_path: Path) -> None:
    model, objective, _ = parts(0)
    opt = make_optimizer([model, objective], "adamw", 1e-3, 0.05, 0.9)
    one_step(model, objective, opt)
    save_state(tmp_path, TrainState(epoch=1, step=2), model, objective, opt, RUN, {})
    fresh_model, fresh_objective, _ = parts(1)
    fresh = make_optimizer([fresh_model, fresh_objective], "adamw", 1e-3, 0.05, 0.9)
    restore_state(tmp_path, fresh_model, fresh_objective, fresh, {})
    saved, again = opt.state_dict()["state"], fresh.state_dict()["state"]
    assert saved.keys() == again.keys() and saved
    for i in saved:  # both moments and the step count, for the decayed and undecayed groups
        assert sorted(saved[i]) == ["exp_avg", "exp_avg_sq", "step"]
        assert all(torch.equal(saved[i][k], again[i][k]) for k in saved[i])


def test_state_of_another_teacher_is_refused(tmp_path: Path) -> None:
    teacher = {"path": "/runs/t/model.safetensors", "sha256": "a" * 64}
    save_state(tmp_path, TrainState(), *parts(0), RUN, {"teacher": teacher})
    restore_state(tmp_path, *parts(0), {"teacher": teacher})  # the same teacher: fine
    with pytest.raises(UsageError, match="changed since this run was interrupted"):
        restore_state(tmp_path, *parts(0), {"teacher": {**teacher, "sha256": "b" * 64}})


@pytest.mark.slow
def test_interrupted_teacher_resumes_bit_for_bit(
    capsys: Capsys, reference: Path, interrupted: Path, tmp_path: Path
) -> None:
    run = copy(interrupted, tmp_path)
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "state.safetensors"]
    extra = read_metadata(run / "state.safetensors")["extra"]
    assert (extra["epoch"], extra["step"]) == (0, 4)  # mid-epoch: partial sums, queue, momentum
    state = run / "state.safetensors"
    check_fails(capsys, run, 2, "eval", state, says=f"finish the run with --resume {run}")
    ok(capsys, "train-teacher", "--resume", run)
    assert_same_weights(reference, run)
    assert history(reference) == history(run)  # the same losses, accuracy and calibration
    assert not (run / "state.safetensors").exists()


@pytest.mark.slow
def test_interrupted_student_resumes_bit_for_bit(
    capsys: Capsys, monkeypatch: pytest.MonkeyPatch, reference: Path, tmp_path: Path
) -> None:
    teacher = tmp_path / "teacher.safetensors"
    shutil.copy(reference / "model.safetensors", teacher)
    ok(capsys, *args("distill", STUDENT, teacher=teacher, out=tmp_path / "whole"))
    # Ctrl-C in epoch 2, after the end-of-epoch save, through the CLI's own progress display
    run = tmp_path / "resumed"
    show = TrainingProgress.__call__
    stop = sigint_at(1, 3)

    def progress(self: TrainingProgress, event: str, info: dict[str, Any]) -> None:
        show(self, event, info)
        stop(event, info)

    monkeypatch.setattr(TrainingProgress, "__call__", progress)
    r = icckd(capsys, *args("distill", STUDENT, teacher=teacher, out=run))
    monkeypatch.undo()
    assert r.code == INTERRUPTED, r.err
    assert r.err.strip().splitlines()[-1] == (
        f"interrupted: state saved in {run}; continue with icckd distill --resume {run}"
    )
    # another teacher under the same name would make the resumed run another run: refused
    good = teacher.read_bytes()
    ok(capsys, *args("train-teacher", TEACHER, epochs=1, train_per_class=3, out=tmp_path / "b"))
    shutil.copy(tmp_path / "b" / "model.safetensors", teacher)
    r = icckd(capsys, "distill", "--resume", str(run))
    assert r.code == 2
    assert "changed since this run was interrupted" in one_error(r.err)
    teacher.write_bytes(good)
    ok(capsys, "distill", "--resume", run)
    assert_same_weights(tmp_path / "whole", run)
    assert history(tmp_path / "whole") == history(run)


# the DeiT recipe's AdamW and cosine after a warm-up epoch, on the teacher run above
ADAMW = {**TEACHER, "optimizer": "adamw", "warmup_epochs": 1}


@pytest.mark.slow
def test_interrupted_adamw_cosine_run_resumes_bit_for_bit(capsys: Capsys, tmp_path: Path) -> None:
    ok(capsys, *args("train-teacher", ADAMW, out=tmp_path / "whole"))
    run = tmp_path / "resumed"
    with pytest.raises(Interrupted):  # step 3 of epoch 2: half way down the cosine
        runs.train_teacher(build(TrainTeacherConfig, {**ADAMW, "out": run}), sigint_at(1, 3))
    state = run / "state.safetensors"
    assert (read_metadata(state)["extra"]["epoch"], read_metadata(state)["extra"]["step"]) == (1, 3)
    assert any(k.endswith("/exp_avg_sq") for k in load_tensors(state))  # AdamW's moments
    ok(capsys, "train-teacher", "--resume", run)
    assert_same_weights(tmp_path / "whole", run)
    assert history(tmp_path / "whole") == history(run)
    lrs = [r["lr"] for r in history(run)]
    assert lrs[0] == 5e-4 * 32 / 512 and 0 < lrs[1] < lrs[0] / 10  # the peak, then near 0
