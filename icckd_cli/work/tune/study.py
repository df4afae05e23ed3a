"""The study and its storage: a journal file in OUT, or any SQLAlchemy URL (PostgreSQL).

Workers share a study by its name in one storage. `n_trials` counts the trials of the whole
study: a trial counts when it is running, complete, pruned or failed by its own settings
(diverged); one a worker lost (interrupted, killed) does not, so rerunning replaces it. A
trial that finds n_trials others counted before it (two workers asked at the same moment)
steps aside unrun, so the workers finish exactly n_trials between them.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError, UsageError, first_line
from icckd_cli.work.tune.config import TuneFile

INSTALL = "pip install -e '.[tune]'"
JOURNAL_FILE = "study.journal"
# RDB storage: a worker proves it is alive every HEARTBEAT s; a trial silent for GRACE s is
# failed by the next worker that starts a trial (optuna's fail_stale_trials)
HEARTBEAT, GRACE = 10, 60
# user attributes of a trial
RUN_DIR, HOST, PID, REASON, UNCOUNTED = "run_dir", "host", "pid", "fail_reason", "uncounted"
SCHEMA_TRIES = 5
FINGERPRINT = "icckd_fingerprint"
LOST = "icckd_lost_"  # study user attribute per trial failed for a lost worker


def optuna_module() -> Any:
    """Optuna, or a one-line error naming the install command."""
    try:
        import optuna
    except ImportError:
        raise UsageError(f"icckd tune needs Optuna; install it with {INSTALL}") from None
    return optuna


class Storage:
    """Where the study lives, how it is shown, and the storage object optuna opens."""

    def __init__(self, url: str | None, out: Path) -> None:
        self.url = url
        self.journal = None if url else (Path(out) / JOURNAL_FILE).resolve()
        self.opened: Any = None  # optuna's storage object, once open() made it

    @property
    def shown(self) -> str:
        """The storage as printed and in JSON: the journal's path, or the URL sans password."""
        if self.journal is not None:
            return str(self.journal)
        try:
            from sqlalchemy.engine import make_url

            return make_url(str(self.url)).render_as_string(hide_password=True)
        except Exception:
            return str(self.url)

    def damaged(self, exc: Exception) -> IcckdError:
        """A journal optuna cannot replay, as one line."""
        return IcckdError(
            f"the study journal {self.journal} cannot be read ({type(exc).__name__}: "
            f"{first_line(exc)}); move it away to start a new study (the trial folders stay)"
        )

    def check_journal(self) -> None:
        """A journal cut in the middle of a record is refused: optuna would skip the partial
        record, then append the next one to it and lose both. Checked under the journal's
        own lock, so a record another worker is writing is never taken for a cut one."""
        from optuna.storages.journal import JournalFileSymlinkLock

        path = self.journal
        assert path is not None
        if not path.is_file() or path.stat().st_size == 0:
            return
        lock = JournalFileSymlinkLock(str(path))
        lock.acquire()
        try:
            with path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                whole = fh.read(1) == b"\n"
        finally:
            lock.release()
        if not whole:
            raise IcckdError(
                f"the study journal {path} ends in a partial record (the file was cut short); "
                "restore it from a copy, or delete its last line to keep the trials before it"
            )

    def open(self) -> Any:
        """The optuna storage; a bad URL, a missing driver or no server: one line."""
        optuna = optuna_module()
        if self.journal is not None:
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            self.journal.parent.mkdir(parents=True, exist_ok=True)
            self.check_journal()
            try:
                self.opened = JournalStorage(JournalFileBackend(str(self.journal)))
                return self.opened
            except Exception as exc:
                raise self.damaged(exc) from None
        url = str(self.url)
        if "://" not in url:
            raise UsageError(
                f"invalid value for --storage ({url!r}): give a database URL, e.g. "
                "postgresql://USER:PASSWORD@HOST:5432/DATABASE"
            )
        import inspect

        rdb = optuna.storages.RDBStorage
        # optuna >= 4.9 renamed the callback a stale trial gets
        stale = "heartbeat_stale_trial_callback"
        if stale not in inspect.signature(rdb).parameters:
            stale = "failed_trial_callback"
        for attempt in range(SCHEMA_TRIES):
            try:
                with warnings.catch_warnings():  # the heartbeat is "experimental" in optuna 4-5
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self.opened = rdb(
                        with_driver(url), heartbeat_interval=HEARTBEAT, grace_period=GRACE,
                        **{stale: _lost},
                    )  # fmt: skip
                    return self.opened
            except ImportError:
                raise UsageError(
                    f"--storage {self.shown} needs its database driver; install it with "
                    f"{INSTALL} (PostgreSQL: psycopg)"
                ) from None
            except Exception as exc:
                # workers started together on an empty database race to create optuna's
                # tables; the loser finds them made and opens the storage again
                if type(exc).__name__ != "IntegrityError" or attempt + 1 == SCHEMA_TRIES:
                    raise _storage_error(exc, self.shown) from None
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")


def with_driver(url: str) -> str:
    """postgresql://... with the PostgreSQL driver that is installed (psycopg 3, else psycopg2):
    SQLAlchemy 2.0 means psycopg2 by a bare postgresql://, 2.1 psycopg 3."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}{sep}{rest}"
    return url


def _storage_error(exc: Exception, shown: str) -> IcckdError:
    name = type(exc).__name__
    if name in ("ArgumentError", "NoSuchModuleError") or isinstance(exc, ValueError):
        return UsageError(
            f"invalid value for --storage ({shown}): {first_line(exc)}; give a database URL, "
            "e.g. postgresql://USER:PASSWORD@HOST:5432/DATABASE"
        )
    return IcckdError(
        f"cannot open the study storage {shown}: {first_line(exc)}; check that the server "
        "runs and the URL's host, port, user and database"
    )


def _lost(study: Any, trial: Any) -> None:
    """RDB: a trial whose worker stopped sending heartbeats was failed: say so, uncount it.
    (The trial is finished by now and takes no attribute: the study keeps the note.)"""
    study.set_user_attr(LOST + str(trial.number), "its worker stopped (no heartbeat)")


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
        raise _storage_error(exc, storage.shown) from None
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
