"""Training objectives as named, weighted terms (a weight of 0 removes a term).

An objective owns whatever runs beside the model (projection head, intra-class cache,
frozen teacher, CRD heads and memory) and returns the total loss with every part by name;
the engine only sums, steps and logs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icckd_cli.data import Batch
from icckd_cli.methods import registry
from icckd_cli.methods.icc import icc_terms, margin_gate
from icckd_cli.methods.queue import ClassQueue
from icckd_cli.settings.train import UnlabeledOptions
from icckd_cli.training import distributed as dist
from icckd_cli.training.labelled import labelled_ce
from icckd_cli.training.stages import StageReader
from icckd_cli.training.teacher_source import RunTeacher, TeacherSource

if TYPE_CHECKING:
    from icckd_cli.models import ZooModel
    from icckd_cli.settings.config import StudentLoss, TeacherLoss

Stats = dict[str, Tensor]


@dataclass
class Term:
    """One weighted part of an objective: fn(outputs) -> scalar, may add stats."""

    name: str
    weight: float
    fn: Callable[[dict[str, Any], Stats], Tensor]


class Objective(nn.Module):
    """Base: sums weighted terms and reports each one by name."""

    views: int = 1
    preliminary_epochs: int = 0  # first epochs that sum `preliminary` instead of `terms`
    preliminary_eval: bool = False  # the model in eval mode during those epochs

    def __init__(self) -> None:
        super().__init__()
        self.terms: list[Term] = []
        self.preliminary: list[Term] = []

    def add(self, name: str, weight: float, fn: Callable[[dict[str, Any], Stats], Tensor]) -> None:
        """Add a term unless its weight is 0."""
        if weight:
            self.terms.append(Term(name, float(weight), fn))

    def outputs(self, model: nn.Module, batch: Batch, epoch: int) -> dict[str, Any]:
        """What the terms read: logits (V*B, C), features (V*B, D), labels (V*B,) ..."""
        x = batch.views[0] if len(batch.views) == 1 else torch.cat(batch.views)
        logits, feats = model(x, return_features=True)
        y = batch.labels.repeat(len(batch.views))
        return {"logits": logits, "features": feats, "labels": y, "batch": batch, "epoch": epoch}

    def forward(self, model: nn.Module, batch: Batch, epoch: int) -> tuple[Tensor, Stats]:
        """(total loss, {part name: unweighted value, stat name: value})."""
        out = self.outputs(model, batch, epoch)
        stats: Stats = {}
        total: Tensor | float = 0.0
        for term in self.preliminary if epoch < self.preliminary_epochs else self.terms:
            value = term.fn(out, stats)
            stats[term.name] = value.detach()
            total = total + term.weight * value
        assert isinstance(total, Tensor)
        return total, stats

    def after_step(self) -> None:
        """Called once after every optimiser step (caches are filled here)."""

    def describe(self) -> dict[str, Any]:
        """The resolved terms, stored in checkpoints."""
        return {"terms": {t.name: t.weight for t in self.terms}}


def _ce(out: dict[str, Any], stats: Stats) -> Tensor:
    return F.cross_entropy(out["logits"], out["labels"])


class TeacherObjective(Objective):
    """CE + icc_weight * L_intra (docs/method.md), two views when the intra-class term is on."""

    def __init__(
        self,
        num_classes: int,
        feature_dim: int,
        *,
        icc_weight: float,
        margin: float,
        temperature: float,
        queue_size: int,
        embedding: str,
        projection_dim: int = 128,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.margin, self.temperature, self.embedding = margin, temperature, embedding
        self.label_smoothing = label_smoothing
        self.views = 2 if icc_weight > 0 else 1
        dim = {"features": feature_dim, "logits": num_classes, "projection": projection_dim}
        self.projection: nn.Module | None = None
        if embedding == "projection" and icc_weight > 0:
            self.projection = nn.Sequential(
                nn.Linear(feature_dim, feature_dim),
                nn.ReLU(inplace=True),
                nn.Linear(feature_dim, projection_dim),
            )
        self.queue = ClassQueue(num_classes, queue_size if icc_weight > 0 else 0, dim[embedding])
        self._pending: tuple[Tensor, Tensor] | None = None
        self.add("ce", 1.0, self._smoothed_ce if label_smoothing else _ce)
        self.add("icc", icc_weight, self._icc)

    @classmethod
    def from_config(cls, loss: TeacherLoss, num_classes: int, feature_dim: int) -> TeacherObjective:
        """The objective the config's teacher-loss settings describe."""
        return cls(
            num_classes,
            feature_dim,
            icc_weight=loss.icc_weight,
            margin=loss.margin,
            temperature=loss.icc_temperature,
            queue_size=loss.queue_size,
            embedding=loss.embedding,
            projection_dim=loss.projection_dim,
            label_smoothing=loss.label_smoothing,
        )

    def _smoothed_ce(self, out: dict[str, Any], stats: Stats) -> Tensor:
        """CE against (1 - eps) one-hot + eps / C uniform targets (a teacher-side baseline)."""
        return F.cross_entropy(out["logits"], out["labels"], label_smoothing=self.label_smoothing)

    def _icc(self, out: dict[str, Any], stats: Stats) -> Tensor:
        """Margin-gated intra-class InfoNCE over same-class negatives and the cache."""
        if self.embedding == "features":
            z = out["features"]
        elif self.embedding == "logits":
            z = out["logits"]
        else:
            assert self.projection is not None
            z = self.projection(out["features"])
        z1, z2 = z.chunk(2)  # (B, D) each: view 1 and view 2 of the same images
        labels = out["batch"].labels
        gate = margin_gate(out["logits"], out["labels"], self.margin)  # (2B,) bool
        # under torchrun the other processes' share of the global batch joins the negatives
        z_all, z_others = dist.gather_rows(F.normalize(z.detach().float(), dim=1))
        y_all, y_others = dist.gather_rows(out["labels"])
        # the cache per class, fixed shape (no host-device sync): each anchor reads only its
        # own class's K slots, so the cost does not grow with the number of classes
        bank, bank_labels = self.queue.padded()  # (C*K, D), (C*K,) with -1 where empty
        c, k = self.queue.num_classes, self.queue.size
        loss, counted, negatives = icc_terms(
            z1,
            z2,
            labels,
            temperature=self.temperature,
            queue=z_others if len(z_others) else None,  # (W-1)*2B rows of the other processes
            queue_labels=y_others if len(z_others) else None,
            anchor_mask=gate,
            class_bank=bank.view(c, k, -1) if k else None,
            class_filled=(bank_labels >= 0).view(c, k) if k else None,
        )
        n = float(z.shape[0])
        stats["icc_gate_pass"] = gate.float().mean()
        stats["icc_counted"] = counted.float() / n
        stats["icc_negatives"] = negatives.float()
        self._pending = (z_all, y_all)  # every process's embeddings, in rank order
        return loss

    def after_step(self) -> None:
        if self._pending is not None:
            self.queue.push(*self._pending)
            self._pending = None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "label_smoothing": self.label_smoothing,
            "margin": self.margin,
            "icc_temperature": self.temperature,
            "queue_size": self.queue.size,
            "embedding": self.embedding,
            "views": self.views,
        }


class DistillObjective(Objective):
    """CE and the registered methods' terms (methods/) against a frozen teacher's outputs.

    They come from a TeacherSource: the teacher run on each batch (an nn.Module given here
    is wrapped in RunTeacher) or the teacher-output store, which this class cannot tell apart.
    A method's terms are built only when one of its weights is not 0.
    """

    def __init__(
        self,
        teacher: nn.Module | TeacherSource,
        weights: dict[str, float],
        settings: StudentLoss | Mapping[str, Any],
        *,
        feature_dim: int = 0,
        train_size: int = 0,
        epochs: int = 0,
        student: ZooModel | None = None,
        image_size: int = 0,
        masked_ce: bool = False,  # hidden labels (-1) or mixup: training/labelled.py
    ) -> None:
        super().__init__()
        self.masked = masked_ce
        source = RunTeacher(teacher) if isinstance(teacher, nn.Module) else teacher
        object.__setattr__(self, "source", source)  # not a submodule: never trained or saved
        context = registry.Context(feature_dim, int(source.feature_dim), train_size, epochs)
        self.reader: StageReader | None = None  # where a term reads intermediate maps
        if registry.needs_teacher_stages(weights):
            assert student is not None, "a method reading maps needs the student to measure"
            self.reader = StageReader(student, source, settings, image_size)
            context = self.reader.context(context)
        self.settings: dict[str, Any] = {}
        self.add("ce", weights["ce_weight"], labelled_ce if masked_ce else _ce)
        for method in registry.methods():
            own = method.resolved(settings, context)  # its typed settings, run-derived ones filled
            recorded = own.model_dump()
            self.settings.update({k: recorded[k] for k in method.recorded})
            if not any(weights[f"{p}_weight"] for p in method.parts):
                continue
            built = method.build(own, context)
            for part in method.parts:
                got = built[part]
                if got.module is not None:
                    self.add_module(part, got.module)
                if got.fn is not None:
                    self.add(part, weights[f"{part}_weight"], got.fn)
                if got.preliminary is not None:  # unweighted, as RepDistiller's init
                    self.preliminary.append(Term(part, 1.0, got.preliminary))
            if method.preliminary is not None:
                self.preliminary_epochs = max(self.preliminary_epochs, method.preliminary(own))
                self.preliminary_eval = self.preliminary_eval or method.preliminary_eval

    @classmethod
    def from_config(
        cls,
        loss: StudentLoss,
        teacher: ZooModel | TeacherSource,
        feature_dim: int,
        train_size: int,
        epochs: int,
        student: ZooModel | None = None,
        image_size: int = 0,
    ) -> DistillObjective:
        """The configured terms for a student of `feature_dim` trained on `train_size` images
        for `epochs` epochs (a method's schedule, such as a warm-up, scales with them)."""
        return cls(
            teacher,
            loss.resolved_weights(),
            loss,
            feature_dim=feature_dim,
            train_size=train_size,
            epochs=epochs,
            student=student,
            image_size=image_size,
            masked_ce=isinstance(loss, UnlabeledOptions) and loss.masked_ce(),
        )

    def train(self, mode: bool = True) -> DistillObjective:
        super().train(mode)
        self.source.train(mode)  # type: ignore[union-attr]
        return self

    def outputs(self, model: nn.Module, batch: Batch, epoch: int) -> dict[str, Any]:
        if self.preliminary_eval:  # its preliminary stage leaves the student's BN as it is
            model.train(epoch >= self.preliminary_epochs)
        if self.reader is None:
            out = super().outputs(model, batch, epoch)
            out["t_logits"], out["t_features"] = self.source(batch, epoch)  # type: ignore[operator]
        else:  # the maps, logits and features of each network in one forward
            s, t = self.reader.student(model, batch.views[0]), self.reader.teacher_stages(batch)
            out = {"logits": s.logits, "features": s.pooled, "labels": batch.labels,
                   "batch": batch, "stages": s, "t_stages": t,
                   "t_logits": t.logits, "t_features": t.pooled}  # fmt: skip
        if self.masked:  # a method that needs a class (DKD) takes the teacher's where hidden
            out["known"] = y = out["labels"]
            out["labels"] = torch.where(y >= 0, y, out["t_logits"].argmax(dim=1))
        out["epoch"] = epoch - self.preliminary_epochs  # the other schedules start after it
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.settings}
