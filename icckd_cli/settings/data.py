"""Which data set, where, and how it is augmented; the teacher's recorded data set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from icckd_cli.base.errors import UsageError
from icckd_cli.methods import registry
from icckd_cli.settings.common import _Strict
from icckd_cli.settings.recipes import recipe_defaults


def teacher_data(teacher: Path | str | None) -> dict[str, Any]:
    """The data set (and its folder) recorded in an icckd teacher checkpoint; {} if none.

    Read once, where distill's settings are built (the CLI), as defaults under those given.
    """
    if teacher is None or Path(teacher).suffix in (".pth", ".pt"):
        return {}
    from icckd_cli.base.checkpoint import read_metadata
    from icckd_cli.base.errors import IcckdError

    try:
        recorded = read_metadata(Path(teacher)).get("dataset") or {}
    except IcckdError:  # a bad teacher file gets its own error when the teacher loads
        return {}
    out = {"dataset": recorded["name"]} if recorded.get("name") else {}
    if out and recorded.get("data_dir"):
        out["data_dir"] = recorded["data_dir"]
    return out


class DataOptions(_Strict):
    """Which data set, where, and how it is augmented."""

    dataset: str = "cifar100"
    data_dir: Path | None = None
    download: bool = True
    flip: bool | None = None  # None: the data set's own default (off for digits)
    crop_padding: int = Field(4, ge=0, le=32)
    train_per_class: int | None = Field(None, ge=1)
    test_per_class: int | None = Field(None, ge=1)
    # a validation split held out of the training images (one of the two; None: none). The
    # images are fixed per data set (data/registry.py split_class), whatever --seed is
    val_per_class: int | None = Field(None, ge=1)
    val_fraction: float | None = Field(None, gt=0, lt=1)
    # long-tailed training split (data/longtail.py): class i keeps n_max * F^(-i/(C-1))
    imbalance_factor: float = 1.0
    image_size: int = Field(224, ge=16, le=1024)  # streamed sets (imagenet): crop size
    workers: int | None = Field(None, ge=0)  # streamed decoding; None: the cores (0: inline)
    memory_limit_gb: float = Field(16.0, gt=0)  # imagefolder: decoded size allowed in memory

    @model_validator(mode="before")
    @classmethod
    def _data_set_defaults(cls, data: Any) -> Any:
        """Precedence: given > data set recipe (distill's teacher's data set: teacher_data)."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        arch = (data.get("arch") or fields["arch"].default) if "arch" in fields else None
        defaults = recipe_defaults(data.get("dataset"), fields, data.get("method"), arch, data)
        published = registry.dataset_defaults(data.get("dataset"))  # the methods' own
        defaults.update({k: v for k, v in published.items() if k in fields})
        return {**defaults, **data}

    @field_validator("imbalance_factor")
    @classmethod
    def _imbalance(cls, value: float) -> float:
        from icckd_cli.data.longtail import check_imbalance_factor

        try:
            return check_imbalance_factor(value)
        except UsageError as exc:  # a ValueError names the TOML table in an experiment
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _one_validation_rule(self) -> DataOptions:
        if self.val_per_class is not None and self.val_fraction is not None:
            raise ValueError(
                f"invalid value for --val-fraction ({self.val_fraction:g}): --val-per-class "
                f"({self.val_per_class}) is given too; hold out by one of the two"
            )
        return self
