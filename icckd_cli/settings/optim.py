"""Optimiser and schedule settings; the recipe fills in what is not given (train.RunSettings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from icckd_cli.settings.common import _Strict
from icckd_cli.settings.recipes import RECIPE_EPOCHS


class OptimOptions(_Strict):
    """Optimiser and schedule; the recipe (recipes.py) fills in what is not given."""

    epochs: int = Field(RECIPE_EPOCHS, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # the recipe's: adamw for vision Transformers
    lr: float | None = Field(None, gt=0)  # None: the recipe's (CRD 0.05; DeiT 5e-4 x batch/512)
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD's; AdamW keeps its betas (0.9, 0.999)
    weight_decay: float = Field(5e-4, ge=0)  # the recipe's (ImageNet 1e-4, DeiT 0.05)
    schedule: Literal["step", "cosine"] = "step"  # the recipe's: cosine for vision Transformers
    lr_decay_epochs: list[int] | None = None  # None: 150/180/210 of 240, scaled to epochs
    lr_decay_rate: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int | None = Field(None, ge=0)  # None: the recipe's (DeiT 5 of 300, scaled)

    @model_validator(mode="after")
    def _check_decay(self) -> OptimOptions:
        d = self.lr_decay_epochs
        if d is not None:
            if any(e < 1 for e in d) or sorted(set(d)) != list(d):
                raise ValueError(
                    f"invalid value for --lr-decay-epochs ({','.join(map(str, d))}): give "
                    "positive, strictly increasing epochs, e.g. 150,180,210"
                )
            if d and d[-1] > self.epochs:
                raise ValueError(
                    f"invalid value for --lr-decay-epochs ({','.join(map(str, d))}): ends at "
                    f"{d[-1]}, beyond the last epoch ({self.epochs})"
                )
            if d and self.schedule == "cosine":
                raise ValueError(
                    f"invalid value for --lr-decay-epochs ({','.join(map(str, d))}): the cosine "
                    "schedule has no decay epochs; drop --lr-decay-epochs or pass --schedule step"
                )
        if self.warmup_epochs is not None and self.warmup_epochs > self.epochs:
            raise ValueError(
                f"invalid value for --warmup-epochs ({self.warmup_epochs}): beyond the last "
                f"epoch ({self.epochs}); give at most --epochs"
            )
        return self
