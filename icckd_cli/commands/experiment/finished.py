"""Each finished run of an experiment read once: its checkpoint header, and each teacher's hash.

Every number the results take from a checkpoint (top-1 at the last and the best epoch, the data
set's class counts, the teacher a student recorded) comes from one read of its header, kept in
a `RunResult`; `FinishedRuns` holds them for one invocation, with each teacher's weights hashed
once. The experiment reaches checkpoint files only through the three helpers below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from icckd_cli.commands.experiment.plan import Run


def read_header(path: Path) -> dict[str, Any]:
    """A checkpoint's metadata, without its tensors."""
    from icckd_cli.base.checkpoint import read_metadata

    return read_metadata(path)


def read_weights(path: Path) -> dict[str, Tensor]:
    """A checkpoint's tensors, on the CPU."""
    from icckd_cli.base.checkpoint import load_tensors

    return load_tensors(path)


def weights_sha256(path: Path) -> str:
    """The hash a student records of its teacher's weights."""
    from icckd_cli.base.checkpoint import weights_hash

    return weights_hash(read_weights(path))


@dataclass(frozen=True)
class RunResult:
    """A finished run as its checkpoint header records it."""

    path: Path  # its model.safetensors
    meta: Mapping[str, Any]

    def top1(self, which: str = "final") -> float | None:
        """Test top-1 at the last ('final') or the best epoch."""
        return ((self.meta.get("metrics") or {}).get(which) or {}).get("top1")

    @property
    def dataset(self) -> Mapping[str, Any]:
        """The data set as the run saw it (num_classes, train_counts, image_size, ...)."""
        return self.meta.get("dataset") or {}

    @property
    def teacher_sha256(self) -> str | None:
        """The hash of the teacher's weights a student recorded; None for other runs."""
        return (self.meta.get("teacher") or {}).get("sha256")

    def model(self, device: torch.device) -> nn.Module:
        """The finished model, rebuilt from this header and the file's tensors."""
        from icckd_cli.models import create_model
        from icckd_cli.models.loading import load_state_strict

        m = self.meta
        model = create_model(m["arch"], m["num_classes"], **(m.get("model_args") or {}))
        load_state_strict(model, read_weights(self.path), str(self.path))
        return model.to(device)


class FinishedRuns:
    """The finished runs of one invocation, each header read once, each teacher hashed once."""

    def __init__(self) -> None:
        self._runs: dict[Path, RunResult] = {}
        self._hashes: dict[Path, str] = {}

    def of(self, run: Run) -> RunResult | None:
        """The run's header, read on first use; None while it is not finished."""
        from icckd_cli.training.rundir import MODEL_FILE

        if run.out not in self._runs:
            if run.status() != "done":
                return None
            path = run.out / MODEL_FILE
            self._runs[run.out] = RunResult(path, read_header(path))
        return self._runs[run.out]

    def top1(self, run: Run, which: str = "final") -> float | None:
        """A run's test top-1 at its last ('final') or best epoch; None if not done."""
        result = self.of(run)
        return None if result is None else result.top1(which)

    def teacher_hash(self, path: Path) -> str:
        """sha256 of a teacher file's weights, computed once."""
        if path not in self._hashes:
            self._hashes[path] = weights_sha256(path)
        return self._hashes[path]
