"""The part of a distillation that reads intermediate feature maps (methods with `stages`):
the maps' shapes measured before training, the student's and the teacher's maps at each
step, and the refusals that need both networks (models/features.py reads the maps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from icckd_cli.base.errors import UsageError
from icckd_cli.data import Batch
from icckd_cli.methods.feature_maps import FeatureLayers
from icckd_cli.methods.registry import Context
from icckd_cli.models import ZooModel
from icckd_cli.models.base import Stages
from icckd_cli.models.features import stage_shapes, stages
from icckd_cli.training import distributed as dist
from icckd_cli.training.teacher_source import RunTeacher


class StageReader:
    """Reads the student's and the frozen teacher's maps; knows no method by name."""

    def __init__(
        self,
        student: ZooModel,
        teacher: Any,
        settings: BaseModel | Mapping[str, Any],
        image_size: int,
    ) -> None:
        teacher_model = teacher.teacher if isinstance(teacher, RunTeacher) else None
        if not isinstance(teacher_model, ZooModel):  # the store: its outputs, no network
            raise UsageError(
                "the teacher-output store keeps logits and pooled features only, and this "
                "method reads the teacher's intermediate feature maps; drop --teacher-cache"
            )
        if dist.is_distributed():
            raise UsageError(
                "a method that reads intermediate feature maps runs in one process for now; "
                "run it without torchrun"
            )
        given = settings.model_dump() if isinstance(settings, BaseModel) else dict(settings)
        layers = FeatureLayers.model_validate({k: given.get(k) for k in FeatureLayers.model_fields})
        self.student_layers = tuple(layers.feature_layers or ())
        self.teacher_layers = tuple(layers.teacher_feature_layers or ())
        self.teacher = teacher_model
        self.student_shapes = stage_shapes(student, image_size, self.student_layers)
        self.teacher_shapes = stage_shapes(teacher_model, image_size, self.teacher_layers)
        norms = None if self.teacher_layers else teacher_model.stage_norms()
        self.norms = None
        if norms is not None:
            self.norms = tuple((tuple(n.weight.tolist()), tuple(n.bias.tolist())) for n in norms)

    def context(self, base: Context) -> Context:
        """`base` with the two networks' map shapes and the teacher's stage BatchNorms."""
        return dataclasses.replace(
            base,
            student_stages=self.student_shapes,
            teacher_stages=self.teacher_shapes,
            teacher_norms=self.norms,
        )

    def student(self, model: nn.Module, x: Tensor) -> Stages:
        """The student's maps, logits and pooled features in one forward (gradients kept)."""
        net: Any = getattr(model, "_orig_mod", model)  # a compiled model's own module
        return stages(net, x, self.student_layers)

    def teacher_stages(self, batch: Batch) -> Stages:
        """The frozen teacher's maps on batch.views[0] (eval mode, no gradient)."""
        with torch.inference_mode():
            out = stages(self.teacher, batch.views[0], self.teacher_layers)
        # clones leave inference mode so autograd may save them for the student's backward
        return Stages(
            [m.clone() for m in out.maps],
            [p.clone() for p in out.preact],
            out.pooled.clone(),
            out.logits.clone(),
        )
