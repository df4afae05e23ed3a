"""One trial: ordinary runs in OUT/trials/NNNN/{teacher,student}, scored on validation only.

The runs never read the test split (runs.train_teacher/distill with test=False). Each
evaluated epoch's validation top-1 is reported to the pruner, the teacher's epochs and then
the student's on one step axis; the trial's value is the target's last-epoch validation top-1.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from icckd_cli.base.errors import Diverged, IcckdError, Interrupted, first_line
from icckd_cli.base.events import Callback
from icckd_cli.commands import runs
from icckd_cli.commands.tune.config import TuneFile
from icckd_cli.commands.tune.storage import Storage, optuna_module
from icckd_cli.commands.tune.study import HOST, PID, REASON, RUN_DIR, UNCOUNTED, taken
from icckd_cli.settings.tune import Param

Progress = Callback  # base/events.py: the one progress type


class Surplus(Exception):
    """This trial found n_trials counted trials before it: it steps aside unrun."""


def trial_dir(out: Path, number: int) -> Path:
    """A trial's folder (absolute): OUT/trials/NNNN."""
    return (Path(out) / "trials" / f"{number:04d}").resolve()


def param_name(role: str, key: str) -> str:
    """A searched setting's name in the study: teacher.margin, student.kd_temperature."""
    return f"{role}.{key}"


def suggest(trial: Any, role: str, key: str, p: Param) -> Any:
    """The trial's value of one searched setting."""
    name = param_name(role, key)
    if p.choices is not None:
        return trial.suggest_categorical(name, p.choices)
    if p.integer:
        return trial.suggest_int(name, p.low, p.high, step=p.step or 1, log=p.log)
    return trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)


class Objective:
    """optuna's objective: a trial's runs, its reports to the pruner, its value."""

    def __init__(self, tune: TuneFile, progress: Progress) -> None:
        self.tune, self.progress = tune, progress
        self.last: int | None = None  # the number of the trial this worker ran last

    def __call__(self, trial: Any) -> float:
        self.last = trial.number
        attr = trial.set_user_attr
        if taken(trial.study, before=trial.number) >= self.tune.options.n_trials:
            attr(UNCOUNTED, True)
            attr(REASON, "surplus: n_trials were already taken when it started")
            raise Surplus()
        folder = trial_dir(self.tune.options.out, trial.number)
        attr(RUN_DIR, str(folder))
        attr(HOST, socket.gethostname())
        attr(PID, os.getpid())
        params = {
            role: {k: suggest(trial, role, k, p) for k, p in self.tune.space[role].items()}
            for role in self.tune.roles
        }
        self.progress("trial_start", {"number": trial.number, "params": dict(trial.params)})
        try:
            return self._runs(trial, folder, params)
        except Diverged as exc:
            attr(REASON, "diverged: " + first_line(exc))
            raise
        except (IcckdError, Interrupted, KeyboardInterrupt) as exc:
            # not the setting's fault: the trial does not count, a rerun replaces it
            attr(UNCOUNTED, True)
            attr(REASON, "interrupted" if not isinstance(exc, IcckdError) else first_line(exc))
            raise

    def _runs(self, trial: Any, folder: Path, params: dict[str, dict[str, Any]]) -> float:
        optuna = optuna_module()
        offset = [0]  # the student's epochs follow the teacher's on the pruner's axis

        def callback(event: str, info: dict[str, Any]) -> None:
            if event != "epoch" or "val_top1" not in info:
                return
            step, value = offset[0] + int(info["epoch"]), float(info["val_top1"])
            trial.report(value, step)
            if trial.should_prune():
                trial.set_user_attr(REASON, f"at step {step}, val top-1 {value:.2f}")
                raise optuna.TrialPruned(f"at step {step}")

        o = self.tune.options
        teacher = self.tune.config("teacher", params["teacher"], out=folder / "teacher")
        result = runs.train_teacher(teacher, callback, test=False)
        value = float(result.history[-1]["val_top1"])
        trial.set_user_attr("teacher_val_top1", value)
        if o.target == "student":
            offset[0] = teacher.epochs
            student = self.tune.config(
                "student", params["student"], out=folder / "student", teacher=result.checkpoint
            )
            result = runs.distill(student, callback, test=False)
            value = float(result.history[-1]["val_top1"])
        return value


def run_trials(study: Any, tune: TuneFile, storage: Storage, progress: Progress) -> None:
    """Trials until the study holds n_trials counted ones or [tune]'s timeout passes."""
    from icckd_cli.commands.tune.sampling import next_sampler
    from icckd_cli.commands.tune.study import fail_lost_trials

    objective = Objective(tune, progress)
    o = tune.options
    deadline = None if o.timeout is None else time.monotonic() + o.timeout
    while True:
        fail_lost_trials(study, storage)
        if taken(study) >= o.n_trials:
            break
        if deadline is not None and time.monotonic() >= deadline:
            progress("timeout", {"timeout": o.timeout})
            break
        study.sampler = next_sampler(study, tune)
        started = time.perf_counter()
        try:
            study.optimize(objective, n_trials=1, catch=(Diverged, Surplus))
        finally:
            if objective.last is not None:
                frozen = study.get_trials(deepcopy=False)
                done = next((t for t in frozen if t.number == objective.last), None)
                if done is not None and done.user_attrs.get(REASON, "").startswith("surplus"):
                    done = None
                if done is not None:
                    progress("trial", {"trial": done, "time": time.perf_counter() - started})
                objective.last = None
