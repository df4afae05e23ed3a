"""`torchvision:<weights>`: a torchvision weights enum's file as an icckd teacher.

The enum's file goes into the matching `tv_` network (or, for any other enum,
`torchvision:<builder>`), and the checkpoint records the enum's class names and preprocessing.
"""

from __future__ import annotations

from typing import Any

from icckd_cli.base.torchvision_check import check_torchvision
from icckd_cli.commands.published.record import Published, dataset_record
from icckd_cli.models import torchvision_adapter

# torchvision weights enum -> our network of the same layout
TORCHVISION_ARCHS = {
    "ResNet18_Weights": "tv_resnet18",
    "ResNet34_Weights": "tv_resnet34",
    "ResNet50_Weights": "tv_resnet50",
    "MobileNet_V2_Weights": "tv_mobilenet_v2",
}


def _torchvision_builder(enum_name: str) -> tuple[str, dict[str, Any]] | None:
    """Our network for a torchvision weights enum: a tv_ name, else torchvision:<builder>."""
    if enum_name in TORCHVISION_ARCHS:
        return TORCHVISION_ARCHS[enum_name], {}
    check_torchvision()
    from torchvision import models

    for builder in torchvision_adapter.names():
        try:
            enum = models.get_model_weights(builder)
        except (ValueError, KeyError):
            continue
        if enum.__name__ == enum_name:
            return f"torchvision:{builder}", {}
    return None


def torchvision_teacher(name: str, rest: str) -> Published | None:
    """torchvision:<Enum>.<member> through torchvision's weights API, or None if unknown."""
    check_torchvision()
    from torchvision import models

    enum_name, _, member = rest.partition(".")
    found = _torchvision_builder(enum_name)
    if found is None:
        return None
    arch, args = found
    weights = getattr(getattr(models, enum_name), member, None)
    if weights is None:
        return None
    if arch.startswith("torchvision:") and "min_size" in weights.meta:
        # ViT weights of 384 px exist
        if torchvision_adapter.size_arg(arch.partition(":")[2]) == "image_size":
            args = {"image_size": int(weights.meta["min_size"][0])}
    tf = weights.transforms()  # torchvision's ImageClassification preset
    categories = list(weights.meta["categories"])
    crop = int(tf.crop_size[0])
    dataset = dataset_record("imagenet", categories, list(tf.mean), list(tf.std), crop)
    # display names ("tench") of the classes in sorted-wnid order, which ILSVRC folders
    # (train/n01440764/...) give too: the imagenet data set matches them by order
    dataset["class_order"] = "wnid"
    preprocessing = {
        "resize_size": list(tf.resize_size),
        "crop_size": list(tf.crop_size),
        "mean": list(tf.mean),
        "std": list(tf.std),
        "interpolation": tf.interpolation.value,
    }
    extra = {"preprocessing": preprocessing, "published_metrics": weights.meta.get("_metrics")}
    return Published(name, arch, weights.url, dataset, extra=extra, model_args=args)
