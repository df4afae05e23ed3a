"""The study in its storage (storage.py): which trials count, which workers are lost.

Workers share a study by its name in one storage. `n_trials` counts the trials of the whole
study: a trial counts when it is running, complete, pruned or failed by its own settings
(diverged); one a worker lost (interrupted, killed) does not, so rerunning replaces it. A
trial that finds n_trials others counted before it (two workers asked at the same moment)
steps aside unrun, so the workers finish exactly n_trials between them.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.commands.tune.config import TuneFile
from icckd_cli.commands.tune.storage import LOST, Storage, heartbeat_silence, optuna_module

# user attributes of a trial
RUN_DIR, HOST, PID, REASON, UNCOUNTED = "run_dir", "host", "pid", "fail_reason", "uncounted"
FINGERPRINT = "icckd_fingerprint"


def lost_trials(study: Any) -> dict[int, str]:
    """Trials failed for a lost worker (RDB heartbeat), by number: why."""
    attrs = study.user_attrs
    return {int(k[len(LOST) :]): v for k, v in attrs.items() if k.startswith(LOST)}


def open_study(
    tune: TuneFile, storage: Storage, name: str, sampler: Any = None, pruner: Any = None
) -> Any:
    """Create the study or join it; a study made from another file is refused. The sampler
    and pruner are this worker's (sampling.py); None: optuna's defaults."""
    optuna = optuna_module()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # icckd prints its own lines
    opened = storage.open()
    o = tune.options
    try:
        study = optuna.create_study(
            storage=opened,
            sampler=sampler,
            pruner=pruner,
            study_name=name,
            direction="maximize",
            load_if_exists=True,
        )
    except IcckdError:
        raise
    except Exception as exc:
        if storage.journal is not None:
            raise storage.damaged(exc) from None
        raise storage.error(exc) from None
    mark = study.user_attrs.get(FINGERPRINT)
    if mark is None:
        study.set_user_attr(FINGERPRINT, tune.fingerprint())
        study.set_user_attr("target", o.target)
    elif mark != tune.fingerprint():
        raise UsageError(
            f"study '{name}' in {storage.shown} was made from another file (another space or "
            "target); pass another --study-name or --out, or use the file it was made from"
        )
    return study


def counted(trial: Any, lost: Any = ()) -> bool:
    """Whether a trial counts towards n_trials (see the module's note)."""
    state = trial.state.name
    if state == "WAITING" or trial.user_attrs.get(UNCOUNTED) or trial.number in lost:
        return False
    return state in ("RUNNING", "COMPLETE", "PRUNED", "FAIL")


def taken(study: Any, before: int | None = None) -> int:
    """The counted trials of the study (with a number below `before`, if given)."""
    trials = study.get_trials(deepcopy=False)
    lost = lost_trials(study)
    return sum(counted(t, lost) for t in trials if before is None or t.number < before)


def fail_lost_trials(study: Any, storage: Storage) -> None:
    """Trials whose worker is gone stop counting as running: by heartbeat (RDB), or (journal)
    by their process id on this machine."""
    optuna = optuna_module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a storage without heartbeat: nothing
    if storage.journal is not None:
        fail_lost_workers(study, storage.opened)


def fail_lost_workers(study: Any, opened: Any) -> None:
    """Journal storage: RUNNING trials of this machine whose process is gone become FAIL."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(study_state("RUNNING"),)):
        pid = t.user_attrs.get(PID)
        if t.user_attrs.get(HOST) != host or not isinstance(pid, int) or _alive(pid):
            continue
        opened.set_trial_user_attr(t._trial_id, UNCOUNTED, True)
        opened.set_trial_user_attr(
            t._trial_id, REASON, f"its worker (process {pid}) stopped mid-trial"
        )
        opened.set_trial_state_values(t._trial_id, study_state("FAIL"))


def study_state(name: str) -> Any:
    """optuna's TrialState by name."""
    return getattr(optuna_module().trial.TrialState, name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Running:
    """A trial still running when this worker finished: whose, and (RDB) when its heartbeat
    goes stale, freeing its place for the next worker that starts."""

    number: int
    host: str | None
    pid: int | None
    silent_s: float | None = None  # seconds since its worker's last heartbeat; None: unknown
    grace_s: float | None = None  # silence after which it is failed; None: no heartbeat
    free_at: datetime | None = None  # local time its heartbeat goes stale (silent and grace)


def still_running(study: Any, storage: Storage) -> list[Running]:
    """The study's trials in state RUNNING (another worker's, or a dead one's not yet stale)."""
    trials = study.get_trials(deepcopy=False, states=(study_state("RUNNING"),))
    silent: dict[int, float] = {}
    grace = None
    if trials and storage.journal is None:
        silent = heartbeat_silence(storage.opened, [t._trial_id for t in trials])
        grace = storage.opened.grace_period
    now = datetime.now().astimezone()
    found = []
    for t in trials:
        pid, quiet = t.user_attrs.get(PID), silent.get(t._trial_id)
        free_at = None
        if quiet is not None and grace is not None:
            free_at = now + timedelta(seconds=max(grace - quiet, 0.0))
        pid = pid if isinstance(pid, int) else None
        found.append(Running(t.number, t.user_attrs.get(HOST), pid, quiet, grace, free_at))
    return found
