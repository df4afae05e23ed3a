"""icckd tune's storage: a URL's password never printed or written, parseable or not; the
URL from $ICCKD_TUNE_STORAGE; the driver each scheme needs; the rerun command."""

from __future__ import annotations

from pathlib import Path

import pytest

from icckd_cli.commands.tune import rerun_command
from icckd_cli.commands.tune.storage import Storage, mask_url
from tests.helpers import icckd
from tests.test_tune_config import write

pytest.importorskip("optuna")

PASSWORD = "s3cr%t-Pw"  # a % as well: the decoded and the written forms both stay hidden
WRITTEN = "s3cr%25t-Pw"  # as a URL spells it
# each ends in a refusal: a bad port, an unknown scheme, no host (the default socket is
# absent here), a closed port on loopback, no scheme, the password as a query key, an @ in it
URLS = [
    (f"postgresql://u:{WRITTEN}@127.0.0.1:5x432/db", 2, "invalid value for {where} ("),
    (f"nosuchdb://u:{WRITTEN}@h/db", 2, "invalid value for {where} ("),
    (f"postgresql://u:{WRITTEN}@/db", 1, "cannot open the study storage "),
    (f"postgresql://u:{WRITTEN}@127.0.0.1:1/db", 1, "cannot open the study storage "),
    (f"u:{WRITTEN}@127.0.0.1/db", 2, "invalid value for {where} ('"),
    (f"postgresql://u@127.0.0.1:1/db?password={WRITTEN}", 1, "cannot open the study storage "),
    (f"postgresql://u:{PASSWORD}@127.0.0.1:1/db", 1, "cannot open the study storage "),
    (f"mysql://u:{WRITTEN}@127.0.0.1:1/db", 2, "{where} "),
    (f"postgresql+psycopg2://u:{WRITTEN}@127.0.0.1:1/db", 2, "{where} "),
]


def files_under(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:pw@127.0.0.1:5x432/db", "postgresql://u:***@127.0.0.1:5x432/db"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),  # an unescaped @
        ("postgresql://u:p/w@h/db", "postgresql://u:***@h/db"),  # an unescaped /
        ("u:pw@h/db", "u:***@h/db"),  # no scheme
        ("postgresql://u:@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?sslmode=require&password=pw", "postgresql://u@h/db?sslmode=require&password=***"),
        ("host=h password=pw", "host=h password=***"),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),  # nothing to hide
        ("not-a-url", "not-a-url"),
    ],
)  # fmt: skip
def test_mask_url_hides_the_password_of_any_text(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert Storage(url, Path("o")).shown == shown


def test_a_library_message_is_scrubbed_of_every_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "env-pw-77")
    url = f"postgresql://u:{WRITTEN}@h/db"
    storage = Storage(url, Path("o"))
    exc = RuntimeError(
        f"cannot parse {url} (password {PASSWORD}); tried env-pw-77; "
        "and mysql://v:other@x/y as well\nsecond line"
    )
    line = str(storage.error(exc))
    assert line == (
        "cannot open the study storage postgresql://u:***@h/db: cannot parse "
        "postgresql://u:***@h/db (password ***); tried ***; and mysql://v:***@x/y as well; "
        "check that the server runs and the URL's host, port, user and database"
    )


@pytest.mark.parametrize(("url", "code", "start"), URLS)
@pytest.mark.parametrize("given", ["option", "environment"])
def test_no_refusal_shows_or_writes_the_password(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    code: int,
    start: str,
    given: str,
) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # read by libpq itself: never echoed either
    path = write(tmp_path)
    before = files_under(tmp_path)
    more = ["--storage", url]
    if given == "environment":
        monkeypatch.setenv("ICCKD_TUNE_STORAGE", url)
        more = []
    r = icckd(capsys, "tune", str(path), "--out", str(tmp_path / "out"), *more)
    assert r.code == code and r.out == ""
    assert len(r.err.strip().splitlines()) == 1, r.err
    for secret in (PASSWORD, WRITTEN):
        assert secret not in r.err
    assert files_under(tmp_path) == before  # nothing written: no OUT, no journal
    where = "$ICCKD_TUNE_STORAGE" if given == "environment" else "--storage"
    assert r.err.startswith("error: " + start.format(where=where) + mask_url(url)), r.err


def test_the_driver_of_each_scheme_is_named_with_its_package(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path)
    for url, driver, install in [
        ("mysql://u:pw@h/db", "MySQLdb", "pip install mysqlclient"),
        ("mysql+pymysql://u:pw@h/db", "pymysql", "pip install pymysql"),
        ("postgresql+psycopg2://u:pw@h/db", "psycopg2", "pip install psycopg2-binary"),
    ]:
        r = icckd(capsys, "tune", str(path), "--out", str(tmp_path / "out"), "--storage", url)
        assert r.code == 2
        assert r.err.strip() == (
            f"error: --storage {mask_url(url)} needs the database driver {driver}; install it "
            f"with {install}"
        )


def test_the_rerun_command_repeats_the_options_without_the_password() -> None:
    given = {"out": Path("o u t"), "n_trials": 6, "timeout": 30.0}
    line = rerun_command(Path("s.toml"), given, "st", "postgresql://u:pw@h/db")
    assert line == (
        "icckd tune s.toml --out 'o u t' --n-trials 6 --timeout 30 --storage "
        "'postgresql://u:***@h/db' --study-name st"
    )
    # a URL from $ICCKD_TUNE_STORAGE is read again from there: the command names no storage
    assert rerun_command(Path("s.toml"), {}, None, None) == "icckd tune s.toml"


def test_only_sqlalchemy_s_integrity_error_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna
    from sqlalchemy.exc import IntegrityError

    from icckd_cli.base.errors import IcckdError
    from icckd_cli.commands.tune import storage as storage_mod

    monkeypatch.setattr(storage_mod.time, "sleep", lambda s: None)
    calls: list[int] = []

    def racing(*args: object, **kwargs: object) -> str:
        calls.append(1)
        if len(calls) < 3:  # the tables were made by another worker meanwhile
            raise IntegrityError("CREATE TABLE studies", {}, Exception("duplicate key"))
        return "opened"

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    assert Storage("postgresql://u:pw@h/db", Path("o")).open() == "opened"
    assert len(calls) == 3

    class IntegrityErrorLookalike(Exception):  # a name is no class: not retried
        pass

    IntegrityErrorLookalike.__name__ = "IntegrityError"

    def other(*args: object, **kwargs: object) -> str:
        calls.append(1)
        raise IntegrityErrorLookalike("pw in here")

    calls.clear()
    monkeypatch.setattr(optuna.storages, "RDBStorage", other)
    with pytest.raises(IcckdError) as info:
        Storage("postgresql://u:pw@h/db", Path("o")).open()
    assert len(calls) == 1
    assert info.value.message == (
        "cannot open the study storage postgresql://u:***@h/db: *** in here; check that the "
        "server runs and the URL's host, port, user and database"
    )


@pytest.mark.parametrize(("code", "retried"), [("42P07", True), ("42710", True), ("42501", False)])
def test_postgresql_s_duplicate_table_is_a_lost_race_and_retried(
    monkeypatch: pytest.MonkeyPatch, code: str, retried: bool
) -> None:
    import optuna
    from sqlalchemy.exc import ProgrammingError

    from icckd_cli.base.errors import IcckdError
    from icckd_cli.commands.tune import storage as storage_mod

    class Orig(Exception):
        sqlstate = code  # as psycopg 3 tells it: 42P07 duplicate table, 42501 no permission

    monkeypatch.setattr(storage_mod.time, "sleep", lambda s: None)
    calls: list[int] = []

    def creating(*args: object, **kwargs: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ProgrammingError("CREATE TABLE studies", {}, Orig("relation exists"))
        return "opened"

    monkeypatch.setattr(optuna.storages, "RDBStorage", creating)
    storage = Storage("postgresql://u:pw@h/db", Path("o"))
    if retried:
        assert storage.open() == "opened" and len(calls) == 2
    else:
        with pytest.raises(IcckdError, match="^cannot open the study storage "):
            storage.open()
        assert len(calls) == 1
