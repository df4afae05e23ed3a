"""The knowledge-distillation model zoo: the CRD / RepDistiller CIFAR networks, and the
ImageNet ones of the ResNet34 -> ResNet18 and ResNet50 -> MobileNetV1 benchmarks; and any
classifier of timm (`timm:<name>`) or torchvision (`torchvision:<builder>`) through one
adapter each (timm_adapter.py, torchvision_adapter.py), imported when first named.

Every network keeps the reference state-dict layout, so published teacher checkpoints load
with strict=True. Importing the family modules registers their names.
"""

from __future__ import annotations

from icckd_cli.models import (  # noqa: F401  (imported for their registrations)
    mobilenetv1,
    mobilenetv2,
    resnet,
    resnetv2,
    shufflenetv1,
    shufflenetv2,
    tvnets,
    vgg,
    wrn,
)
from icckd_cli.models.base import ZooModel
from icckd_cli.models.registry import (
    create_model,
    feature_dim,
    input_size,
    list_models,
    model_args_for,
    resolve_name,
)

__all__ = [
    "ZooModel",
    "create_model",
    "feature_dim",
    "input_size",
    "list_models",
    "model_args_for",
    "resolve_name",
]
