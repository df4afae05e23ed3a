"""Where a study lives: a journal file in OUT, or a database URL (PostgreSQL) given by
--storage or by $ICCKD_TUNE_STORAGE; how it is shown (never with its password, whether or not
the URL parses), the driver it needs, and the storage object optuna opens.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from icckd_cli.base.errors import IcckdError, UsageError, first_line

INSTALL = "pip install -e '.[tune]'"
JOURNAL_FILE = "study.journal"
ENV_STORAGE = "ICCKD_TUNE_STORAGE"  # the whole URL, so that no password is on a command line
# RDB storage: a worker proves it is alive every HEARTBEAT s; a trial silent for GRACE s is
# failed by the next worker that starts a trial (optuna's fail_stale_trials)
HEARTBEAT, GRACE = 10, 60
SCHEMA_TRIES = 5
LOST = "icckd_lost_"  # study user attribute per trial failed for a lost worker
MASK = "***"
# the package that provides a driver module SQLAlchemy failed to import
DRIVER_PACKAGES = {"psycopg": INSTALL, "psycopg2": "pip install psycopg2-binary",
                   "MySQLdb": "pip install mysqlclient", "pymysql": "pip install pymysql",
                   "asyncpg": "pip install asyncpg", "pg8000": "pip install pg8000",
                   "mysql": "pip install mysql-connector-python"}  # fmt: skip
# a password given as a key: ?password=..., or libpq's "host=h password=..."
_KEY_PASSWORD = re.compile(r"(?i)(password=)[^&;#\s'\"]*")
# scheme://user:PASSWORD@ inside a longer text (a library's message)
_URL_PASSWORD = re.compile(r"([A-Za-z][\w+.-]*://[^:/@\s'\"]*:)[^\s'\"]*@")


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, read from the raw text so that a URL that
    does not parse (a bad port, an unknown scheme) is masked too: scheme://user:***@host..."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # the last @ ends the user part: a password may hold an unescaped @ (masking more is safe)
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        if colon:
            rest = f"{user}:{MASK}{rest[at:]}"
    return _KEY_PASSWORD.sub(r"\1" + MASK, scheme + sep + rest)


def same_place(a: str, b: str) -> bool:
    """Whether two storages as shown are one database: the password given (or not, with
    $PGPASSWORD) does not make another study."""

    def place(shown: str) -> str:
        shown = mask_url(shown).replace(f":{MASK}@", "@")
        return re.sub(rf"[?&;]password={re.escape(MASK)}", "", shown)

    return place(a) == place(b)


def secrets_of(url: str | None) -> list[str]:
    """The passwords a storage may reveal: the URL's (as written and decoded), its
    password= keys, and $PGPASSWORD, which libpq and psycopg read by themselves."""
    found: list[str] = []
    if url:
        rest = url.partition("://")[2] or url
        at = rest.rfind("@")
        if at >= 0 and ":" in rest[:at]:
            found.append(rest[:at].partition(":")[2])
        found += [m.group(0)[len("password=") :] for m in _KEY_PASSWORD.finditer(url)]
    found.append(os.environ.get("PGPASSWORD", ""))
    found += [unquote(s) for s in found]
    # longest first: a password that holds another is replaced whole
    return sorted({s for s in found if s}, key=len, reverse=True)


def optuna_module() -> Any:
    """Optuna, or a one-line error naming the install command."""
    try:
        import optuna
    except ImportError:
        raise UsageError(f"icckd tune needs Optuna; install it with {INSTALL}") from None
    return optuna


class Storage:
    """Where the study lives, how it is shown, and the storage object optuna opens."""

    def __init__(self, url: str | None, out: Path, from_env: bool = False) -> None:
        self.url = url
        self.from_env = from_env  # the URL came from $ICCKD_TUNE_STORAGE, not --storage
        self.journal = None if url else (Path(out) / JOURNAL_FILE).resolve()
        self.opened: Any = None  # optuna's storage object, once open() made it

    @classmethod
    def given(cls, url: str | None, out: Path) -> Storage:
        """--storage's URL, else $ICCKD_TUNE_STORAGE's, else the journal in OUT."""
        if url:
            return cls(url, out)
        env = os.environ.get(ENV_STORAGE) or None
        return cls(env, out, from_env=env is not None)

    @property
    def shown(self) -> str:
        """The storage as printed and in JSON: the journal's path, or the URL sans password."""
        if self.journal is not None:
            return str(self.journal)
        return mask_url(str(self.url))

    @property
    def option(self) -> str:
        """Where the URL was given, as a message names it."""
        return f"${ENV_STORAGE}" if self.from_env else "--storage"

    def scrub(self, text: str) -> str:
        """A message (a library's, say) with every password of this storage masked."""
        for secret in secrets_of(self.url):
            text = text.replace(secret, MASK)
        return _URL_PASSWORD.sub(r"\1" + MASK + "@", _KEY_PASSWORD.sub(r"\1" + MASK, text))

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
                f"invalid value for {self.option} ({self.shown!r}): give a database URL, e.g. "
                "postgresql://USER:PASSWORD@HOST:5432/DATABASE"
            )
        import inspect

        from sqlalchemy.exc import IntegrityError, ProgrammingError

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
            except ImportError as exc:
                raise self.no_driver(exc) from None
            except (IntegrityError, ProgrammingError) as exc:
                # workers started together on an empty database race to create optuna's
                # tables; the loser finds them made and opens the storage again
                if not _made_meanwhile(exc) or attempt + 1 == SCHEMA_TRIES:
                    raise self.error(exc) from None
                time.sleep(0.2 * (attempt + 1))
            except Exception as exc:
                raise self.error(exc) from None
        raise AssertionError("unreachable")

    def no_driver(self, exc: ImportError) -> UsageError:
        """A database driver SQLAlchemy could not import, with the package that provides it."""
        # optuna wraps SQLAlchemy's ModuleNotFoundError, which names the module
        cause: BaseException | None = exc
        while cause is not None and not getattr(cause, "name", None):
            cause = cause.__cause__ or cause.__context__
        module = str(getattr(cause, "name", None) or "").partition(".")[0]
        if not module:
            return UsageError(
                f"{self.option} {self.shown} needs a database driver that is not installed "
                f"({self.scrub(first_line(exc))}); install the one its scheme names"
            )
        install = DRIVER_PACKAGES.get(module, "")
        fix = f"install it with {install}" if install else f"install the package of {module}"
        return UsageError(f"{self.option} {self.shown} needs the database driver {module}; {fix}")

    def error(self, exc: BaseException) -> IcckdError:
        """A storage that cannot be opened, as one line with no password in it."""
        from sqlalchemy.exc import ArgumentError  # NoSuchModuleError is one

        why = self.scrub(first_line(exc))
        if isinstance(exc, (ArgumentError, ValueError)):
            return UsageError(
                f"invalid value for {self.option} ({self.shown}): {why}; give a database URL, "
                "e.g. postgresql://USER:PASSWORD@HOST:5432/DATABASE"
            )
        return IcckdError(
            f"cannot open the study storage {self.shown}: {why}; check that the server "
            "runs and the URL's host, port, user and database"
        )


# PostgreSQL's codes for a table, type or key another session created first
MADE_MEANWHILE = {"42P07", "42710", "23505"}  # duplicate_table, duplicate_object, unique_violation


def _made_meanwhile(exc: Exception) -> bool:
    """Whether a failed CREATE lost a race: an IntegrityError (any database), or PostgreSQL's
    duplicate table or object (a ProgrammingError to SQLAlchemy)."""
    from sqlalchemy.exc import IntegrityError

    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)  # psycopg 3, 2
    return isinstance(exc, IntegrityError) or code in MADE_MEANWHILE


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


def _lost(study: Any, trial: Any) -> None:
    """RDB: a trial whose worker stopped sending heartbeats was failed: say so, uncount it.
    (The trial is finished by now and takes no attribute: the study keeps the note.)"""
    study.set_user_attr(LOST + str(trial.number), "its worker stopped (no heartbeat)")


def heartbeat_silence(opened: Any, trial_ids: list[int]) -> dict[int, float]:
    """RDB: seconds since each trial's last heartbeat, by the database's clock (optuna's own
    stale check uses that clock); {} where optuna's table cannot be read."""
    import sqlalchemy

    try:  # optuna has no public reader of its heartbeat table
        from optuna.storages._rdb.models import TrialHeartbeatModel as Beat

        with opened.engine.connect() as conn:
            now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one()
            rows = conn.execute(
                sqlalchemy.select(Beat.trial_id, Beat.heartbeat).where(Beat.trial_id.in_(trial_ids))
            ).all()
    except (ImportError, AttributeError, sqlalchemy.exc.SQLAlchemyError):
        return {}
    # optuna stores the server's time without its zone and compares it so
    now = now.replace(tzinfo=None)
    return {int(i): (now - beat.replace(tzinfo=None)).total_seconds() for i, beat in rows}
