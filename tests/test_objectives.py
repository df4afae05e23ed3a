"""Teacher and student objectives: terms, views, the cache, the frozen teacher, --init."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from icckd_cli.data import Batch
from icckd_cli.models import create_model
from icckd_cli.settings.config import DistillConfig, build
from icckd_cli.training.objectives import DistillObjective, TeacherObjective
from tests.helpers import TINY, icckd


def _batch(labels: list[int], views: int = 2, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(len(labels), 3, 32, 32, generator=g) for _ in range(views)]
    return Batch(xs, torch.tensor(labels), torch.arange(len(labels)))


def _teacher_objective(**kw: float) -> TeacherObjective:
    opts = {"icc_weight": 0.1, "margin": -1.0, "temperature": 0.1, "queue_size": 8}
    opts.update(kw)
    return TeacherObjective(
        3, 64, icc_weight=opts["icc_weight"], margin=opts["margin"],
        temperature=opts["temperature"], queue_size=int(opts["queue_size"]),
        embedding="features",
    )  # fmt: skip


def test_cross_entropy_teacher_has_one_term_one_view_and_no_cache() -> None:
    obj = _teacher_objective(icc_weight=0.0)
    assert obj.views == 1 and [t.name for t in obj.terms] == ["ce"]
    assert obj.queue.bank.numel() == 0


def test_label_smoothing_matches_the_hand_computed_loss() -> None:
    obj = TeacherObjective(3, 4, icc_weight=0.0, margin=0.5, temperature=0.1, queue_size=0,
                           embedding="features", label_smoothing=0.3)  # fmt: skip
    logits, labels = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])
    # targets (1 - 0.3) one-hot + 0.3 / 3: [0.8, 0.1, 0.1]; log p = logits - log(e^2 + 2)
    lse = math.log(math.exp(2.0) + 2.0)
    expected = -(0.8 * (2.0 - lse) + 0.1 * (0.0 - lse) * 2)
    got = obj.terms[0].fn({"logits": logits, "labels": labels}, {})
    assert obj.views == 1 and [t.name for t in obj.terms] == ["ce"]
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert obj.describe()["label_smoothing"] == 0.3


def test_negatives_come_from_the_batch_then_from_the_cache() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", 3)
    obj = _teacher_objective()
    batch = _batch([0, 0, 1, 1])
    _, stats = obj(model, batch, 0)
    # each anchor: the other image of its class, in both views = 2 negatives
    assert stats["icc_negatives"].item() == 2.0
    assert stats["icc_gate_pass"].item() == 1.0 and stats["icc_counted"].item() == 1.0
    obj.after_step()
    queue, labels = obj.queue.contents()
    assert queue.shape == (8, 64) and sorted(labels.tolist()) == [0] * 4 + [1] * 4
    assert torch.allclose(queue.norm(dim=1), torch.ones(8))
    _, stats = obj(model, batch, 0)
    # now also the 4 cached embeddings of the class (2 images x 2 views)
    assert stats["icc_negatives"].item() == 6.0


def test_a_closed_gate_gives_an_exact_zero_that_still_backpropagates() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", 3)
    obj = _teacher_objective(margin=0.999)
    loss, stats = obj(model, _batch([0, 0, 1, 1]), 0)
    assert stats["icc"].item() == 0.0 and stats["icc_gate_pass"].item() == 0.0
    loss.backward()  # the CE term alone drives the step


def test_cache_memory_is_fixed_by_classes_size_and_dimension() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", 3)
    obj = _teacher_objective(queue_size=4)
    for seed in range(5):
        obj(model, _batch([0, 1, 2, 0, 1, 2], seed=seed), 0)
        obj.after_step()
    assert obj.queue.bank.shape == (3, 4, 64)
    assert obj.queue.contents()[0].shape == (12, 64)


def test_projection_head_is_trained_but_not_part_of_the_model() -> None:
    obj = TeacherObjective(3, 64, icc_weight=0.1, margin=-1, temperature=0.1, queue_size=0,
                           embedding="projection", projection_dim=16)  # fmt: skip
    assert obj.projection is not None and len(list(obj.parameters())) == 4
    model = create_model("resnet8", 3)
    loss, stats = obj(model, _batch([0, 0, 1, 1]), 0)
    assert torch.isfinite(stats["icc"])
    loss.backward()
    # the head is trained: every one of its parameters gets a non-zero gradient ...
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.projection.parameters())
    # ... and it lives on the objective, not in the model's weights (model.safetensors)
    assert not any(k.startswith("projection") for k in model.state_dict())
    assert set(obj.state_dict()) >= {
        f"projection.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")
    }


def test_the_objective_gates_with_the_one_margin_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The teacher's objective calls methods.icc.margin_gate; the pass rate is its mean."""
    from icckd_cli.methods import icc
    from icckd_cli.training import objectives

    seen: list[torch.Tensor] = []

    def spy(logits: torch.Tensor, labels: torch.Tensor, delta: float) -> torch.Tensor:
        seen.append(icc.margin_gate(logits, labels, delta))
        return seen[-1]

    monkeypatch.setattr(objectives, "margin_gate", spy)
    torch.manual_seed(0)
    for margin, want in ((-1.0, 1.0), (0.999, 0.0)):
        obj = _teacher_objective(margin=margin)
        _, stats = obj(create_model("resnet8", 3), _batch([0, 0, 1, 1]), 0)
        assert seen[-1].shape == (8,) and stats["icc_gate_pass"].item() == want
    assert len(seen) == 2


def test_distill_objective_keeps_teacher_frozen_and_out_of_its_state() -> None:
    teacher = create_model("resnet8", 3)
    cfg = build(DistillConfig, {"method": "kd"})
    weights = cfg.resolved_weights()
    obj = DistillObjective(teacher, weights, cfg)
    assert list(obj.parameters()) == [] and obj.state_dict() == {}
    obj.train()
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    student = create_model("resnet8", 3)
    loss, stats = obj(student, _batch([0, 1, 2], views=1), 0)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert set(stats) == {"ce", "kd"}


def test_init_starts_a_teacher_from_a_published_pth(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A CRD-zoo style .pth ({'model': state} with DataParallel prefixes) seeds the weights."""
    torch.manual_seed(123)
    source = create_model("resnet8", 10)
    wrapped = {"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 240}
    pth = tmp_path / "ckpt_epoch_240.pth"
    torch.save(wrapped, pth)
    out = tmp_path / "ft"
    r = icckd(capsys, "train-teacher", "--arch", "resnet8", "--init", pth, "--epochs", "1",
              "--lr", "1e-12", "--weight-decay", "0", "--out", out, *TINY)  # fmt: skip
    assert r.code == 0, r.err
    got = load_file(str(out / "model.safetensors"))
    for key in ("conv1.weight", "layer1.0.conv1.weight", "fc.weight"):
        assert torch.allclose(got[key], source.state_dict()[key], atol=1e-6), key
    r = icckd(capsys, "train-teacher", "--arch", "resnet14", "--init", pth, "--epochs", "1",
              "--out", tmp_path / "bad", *TINY)  # fmt: skip
    assert r.code == 1 and r.err.count("\n") == 1 and "does not fit a resnet14" in r.err


def test_hidden_labels_reach_ce_as_minus_one_and_dkd_as_the_teachers_class() -> None:
    torch.manual_seed(0)
    teacher = create_model("resnet8", 3)
    cfg = build(DistillConfig, {"method": "dkd", "labels_per_class": 1})
    obj = DistillObjective(teacher, cfg.resolved_weights(), cfg, epochs=10, masked_ce=True)
    assert obj.terms[0].fn.__name__ == "labelled_ce"
    batch = _batch([2, -1, 0, -1], views=1)
    out = obj.outputs(create_model("resnet8", 3), batch, 0)
    top = out["t_logits"].argmax(dim=1)
    assert out["known"].tolist() == [2, -1, 0, -1]
    assert out["labels"].tolist() == [2, int(top[1]), 0, int(top[3])]
    # unmasked (the default), labels pass as they are and CE is the plain one
    plain = DistillObjective(teacher, cfg.resolved_weights(), cfg, epochs=10)
    assert plain.terms[0].fn.__name__ == "_ce"
    assert "known" not in plain.outputs(create_model("resnet8", 3), _batch([2, 1, 0]), 0)
