"""Settings of `icckd tune`: the [tune] table and one searched parameter of [space.*]."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from icckd_cli.settings.config import DataOptions, _Strict

Scalar = bool | int | float | str


class TuneOptions(DataOptions):
    """The [tune] table: the data every trial shares, what is scored and how the study runs."""

    # "student": a trial trains a teacher, distils [student] from it and scores the student;
    # "teacher": a trial trains a teacher and scores it
    target: Literal["student", "teacher"] = "student"
    n_trials: int = Field(20, ge=1)  # the trials of the whole study, over every worker
    timeout: float | None = Field(None, gt=0)  # seconds after which a worker starts no trial
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int = Field(0, ge=0)  # the sampler's; each run uses its [teacher]/[student] seed
    out: Path = Path("tune")
    device: str = "auto"
    tensorboard: bool | None = None  # None: event files when the tensorboard package is installed


class Param(_Strict):
    """One searched setting: a range (low, high; log; step) or a list of choices."""

    # int | float keeps whole numbers whole: low = 0, high = 64 searches integers
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(None, gt=0)
    choices: list[Scalar] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("give either choices = [...] or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices = [...] (a list)")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (low is {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("a range is either log = true or has a step, not both")
        return self

    @property
    def integer(self) -> bool:
        """A range of whole numbers: low, high (and step) written as integers."""
        return self.choices is None and all(
            isinstance(v, int) and not isinstance(v, bool)
            for v in (self.low, self.high, self.step)
            if v is not None
        )

    def extremes(self) -> list[Any]:
        """The values a trial may take at the edges: both ends of a range, or every choice."""
        if self.choices is not None:
            return list(self.choices)
        return [self.low, self.high]

    def describe(self) -> dict[str, Any]:
        """The parameter as JSON, for the study's fingerprint."""
        return self.model_dump(exclude_none=True, exclude_defaults=True) | {"int": self.integer}
