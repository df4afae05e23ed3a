"""Where and how a run executes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from icckd_cli.settings.common import _Strict, check_model_args


class RunOptions(_Strict):
    """Where and how a run executes."""

    arch: str = "resnet56"
    # builder arguments of a timm:/torchvision: arch (img_size defaults to the data set's)
    model_args: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(0, ge=0)  # initialisation, CRD's negatives; the data too unless data_seed
    data_seed: int | None = Field(None, ge=0)  # data order, crops and flips; None: seed
    device: str = "auto"
    out: Path = Path("runs/run")
    overwrite: bool = False
    save_every: int = Field(1, ge=0)  # 0: only the final checkpoint (and one on interrupt)
    eval_every: int = Field(1, ge=1)  # evaluate every N epochs; the last epoch always is
    channels_last: bool = True
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    sync_bn: bool = False
    eval_batch_size: int = Field(512, ge=1)
    tensorboard: bool | None = None  # None: event files when the tensorboard package is installed

    def resolved_data_seed(self) -> int:
        """The seed of the augmentation stream (data order, crops, flips): data_seed or seed."""
        return self.seed if self.data_seed is None else self.data_seed

    @field_validator("model_args")
    @classmethod
    def _check_model_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_model_args(value, "--model-arg")
