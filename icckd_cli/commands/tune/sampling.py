"""The sampler and the pruner of a study, by the names [tune] gives them."""

from __future__ import annotations

import os
from typing import Any

from icckd_cli.commands.tune.config import TuneFile
from icckd_cli.commands.tune.storage import optuna_module


def make_sampler(tune: TuneFile, salt: int) -> Any:
    """The sampler of the next trial: seeded by [tune]'s seed and `salt` (see next_sampler)."""
    samplers = optuna_module().samplers
    seed = (tune.options.seed * 1_000_003 + salt) % 2**32
    if tune.options.sampler == "random":
        return samplers.RandomSampler(seed=seed)
    return samplers.TPESampler(seed=seed)


def next_sampler(study: Any, tune: TuneFile) -> Any:
    """A fresh sampler for the next trial (TPE reads the history from the storage, so it keeps
    no state worth keeping). Seeded by the study's trial count, so one worker repeats a study
    exactly; where other trials run at the time (other workers), the process id is mixed in,
    so workers do not propose the same points."""
    trials = study.get_trials(deepcopy=False)
    salt = len(trials)
    if any(t.state.name == "RUNNING" for t in trials):
        salt += 7919 * os.getpid()
    return make_sampler(tune, salt)


def make_pruner(name: str, steps: int = 0) -> Any:
    """optuna's pruner of that name. The median pruner judges no trial in the first half of
    its `steps` (the teacher's epochs and the student's): early epochs are noisy, and a
    teacher whose extra term makes it start slower would be cut for it."""
    pruners = optuna_module().pruners
    if name == "median":
        return pruners.MedianPruner(n_warmup_steps=steps // 2)
    if name == "hyperband":
        return pruners.HyperbandPruner()
    return pruners.NopPruner()
