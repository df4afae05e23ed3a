"""What a published teacher's name resolves to, and the data-set record its checkpoint keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Published:
    """What a name resolves to: the network, where its file lives, what it was trained on."""

    name: str
    arch: str
    url: str
    dataset: dict[str, Any]
    member: str | None = None  # the file inside a tar archive
    extra: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)  # builder arguments of `arch`
    hub: dict[str, Any] | None = None  # timm: the Hugging Face repository to look up


def dataset_record(
    name: str, classes: list[str], mean: list[float], std: list[float], size: int
) -> dict[str, Any]:
    """The data-set record of a checkpoint (the fields of data.DataSpec)."""
    return {"name": name, "num_classes": len(classes), "classes": classes, "mean": mean,
            "std": std, "image_size": size, "flip": True, "data_dir": None}  # fmt: skip
