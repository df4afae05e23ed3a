"""icckd tune against a real PostgreSQL server: a throwaway cluster on loopback, two workers.

The cluster is Debian's PostgreSQL 15 (initdb and pg_ctl), run as the `postgres` user where
the tests run as root (the server refuses root), in a temporary folder, on a free port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from icckd_cli.commands.tune import storage as storage_mod
from icckd_cli.commands.tune import study as study_mod
from tests.helpers import icckd
from tests.test_tune import finished, killed_mid_trial, tune_file, worker

optuna = pytest.importorskip("optuna")
pytest.importorskip("psycopg")

BIN = Path("/usr/lib/postgresql/15/bin")


def _tool(name: str) -> str | None:
    found = BIN / name
    return str(found) if found.is_file() else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 with an empty database: its URL."""
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="icckd-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    data, sock, port = folder / "data", folder / "sock", _free_port()

    def run(*argv: str) -> None:
        subprocess.run([*as_user, *argv], check=True, capture_output=True, timeout=120, cwd=folder)

    try:
        run("mkdir", str(sock))
        run(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start")
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE icckd")
        yield f"postgresql://postgres@127.0.0.1:{port}/icckd"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "stop", "-m", "immediate"],
                       capture_output=True, timeout=120, cwd=folder)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_study_in_postgresql(
    capsys: pytest.CaptureFixture[str], postgres: str, tmp_path: Path
) -> None:
    path = tune_file(tmp_path, "teacher", n=4)
    # two machines: each worker its own OUT, one study in the server
    outs = [tmp_path / "machine-a", tmp_path / "machine-b"]
    procs = [worker(path, out, "--storage", postgres, "--format", "json") for out in outs]
    results = [json.loads(finished(p)[0]) for p in procs]
    study = optuna.load_study(study_name="tiny", storage=postgres)
    counted = sorted(t.number for t in study.get_trials() if study_mod.counted(t))
    assert len(counted) == 4 and len(set(counted)) == 4
    assert all(t.state.name != "RUNNING" for t in study.get_trials())
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 4
    for t in done:  # each trial's folder is on the machine that ran it
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir.parent.parent in [o.resolve() for o in outs]
        assert (run_dir / "teacher" / "model.safetensors").is_file()
    assert study.user_attrs["icckd_fingerprint"]
    for r in results:
        assert r["storage"] == postgres and r["study_name"] == "tiny"
    # a third worker finds the study full and runs nothing more
    r = icckd(
        capsys, "tune", str(path), "--out", str(tmp_path / "machine-c"), "--storage", postgres
    )
    assert r.code == 0 and "trial " not in r.err and "best: trial" in r.out
    assert len(optuna.load_study(study_name="tiny", storage=postgres).trials) == len(study.trials)


def test_a_study_of_another_file_in_postgresql_is_refused(
    capsys: pytest.CaptureFixture[str], postgres: str, tmp_path: Path
) -> None:
    from icckd_cli.commands.tune import load_tune

    first = load_tune(tune_file(tmp_path / "a", "teacher"))
    study_mod.open_study(first, study_mod.Storage(postgres, tmp_path / "a"), "other")
    path = tune_file(tmp_path / "b", "student")  # another target, another space
    r = icckd(capsys, "tune", str(path), "--out", str(tmp_path / "out"), "--storage", postgres,
              "--study-name", "other")  # fmt: skip
    assert r.code == 2 and not (tmp_path / "out").exists()
    assert r.err.strip() == (
        f"error: study 'other' in {postgres} was made from another file (another space or "
        "target); pass another --study-name or --out, or use the file it was made from"
    )


@pytest.mark.slow
def test_a_killed_worker_s_trial_fails_by_heartbeat_and_is_replaced(
    capsys: pytest.CaptureFixture[str],
    postgres: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, out = tune_file(tmp_path, "teacher", n=1), tmp_path / "out"
    name = ("--study-name", "killed", "--storage", postgres)
    killed_mid_trial(path, out, *name)  # no goodbye: its heartbeats just stop
    study = optuna.load_study(study_name="killed", storage=postgres)
    assert [t.state.name for t in study.trials] == ["RUNNING"]
    monkeypatch.setattr(storage_mod, "GRACE", 1)  # this worker judges silence after 1 s
    monkeypatch.setattr(storage_mod, "HEARTBEAT", 1)
    time.sleep(1.5)
    r = icckd(capsys, "tune", str(path), "--out", str(tmp_path / "out2"), *name,
              "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    study = optuna.load_study(study_name="killed", storage=postgres)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert study.user_attrs["icckd_lost_0"] == "its worker stopped (no heartbeat)"
    rows = {t["number"]: t for t in r.json()["trials"]}
    assert rows[0]["state"] == "failed" and rows[1]["state"] == "complete"


def _every_row(url: str) -> str:
    """Every row of every table of the database, as text."""
    import psycopg

    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )]  # fmt: skip
        assert "study_user_attributes" in tables and "trial_user_attributes" in tables
        rows = [conn.execute(f"SELECT t::text FROM {name} t").fetchall() for name in tables]
    return repr(rows)


def _everything_written(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.slow
def test_a_password_is_nowhere_in_the_output_files_or_the_study(
    capsys: pytest.CaptureFixture[str],
    postgres: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the throwaway server trusts loopback: any password is accepted, so it can be traced
    secret = "pw-7f3a-secret"
    url = postgres.replace("postgres@", f"postgres:{secret}@")
    path, out = tune_file(tmp_path / "file", "teacher", n=1), tmp_path / "out"
    name = ("--study-name", "secret")
    outputs = []
    for fmt in ("table", "json"):
        r = icckd(capsys, "tune", str(path), "--out", str(out), "--storage", url, *name,
                  "--format", fmt)  # fmt: skip
        assert r.code == 0, r.err
        outputs += [r.out, r.err]
    assert r.json()["storage"] == postgres.replace("postgres@", "postgres:***@")
    assert json.loads((out / "study.json").read_text())["storage"] == r.json()["storage"]
    # the URL from $ICCKD_TUNE_STORAGE and the password from $PGPASSWORD: one more trial
    monkeypatch.setenv("ICCKD_TUNE_STORAGE", postgres)
    monkeypatch.setenv("PGPASSWORD", secret)
    r = icckd(capsys, "tune", str(path), "--out", str(out), *name, "--n-trials", "2")
    assert r.code == 0, r.err
    assert r.err.count("trial 1:") == 1 and "best: trial" in r.out
    outputs += [r.out, r.err]
    assert {p.name for p in out.iterdir()} >= {"study.json", "best-teacher.toml", "confirm.toml"}
    for text in outputs:
        assert secret not in text
    assert secret not in _every_row(postgres)  # study and trial attributes included
    assert secret.encode() not in _everything_written(tmp_path)


@pytest.mark.slow
def test_a_worker_that_ends_beside_a_dead_worker_s_running_trial_says_when_it_is_freed(
    capsys: pytest.CaptureFixture[str], postgres: str, tmp_path: Path
) -> None:
    path, out = tune_file(tmp_path, "teacher", n=2), tmp_path / "out"
    name = ("--study-name", "dead", "--storage", postgres)
    proc = killed_mid_trial(path, out, *name)  # its heartbeat stops; 60 s pass before it is stale
    out2 = tmp_path / "out2"
    r = icckd(capsys, "tune", str(path), "--out", str(out2), *name, "--format", "json")
    assert r.code == 0, r.err
    # the database's own count of the silence, read right after the worker ended
    import psycopg

    with psycopg.connect(postgres) as conn:
        (silent,) = conn.execute(
            "SELECT EXTRACT(EPOCH FROM (now()::timestamp - h.heartbeat)) FROM trial_heartbeats h "
            "JOIN trials t ON t.trial_id = h.trial_id WHERE t.number = 0 AND t.study_id = "
            "(SELECT study_id FROM studies WHERE study_name = 'dead')"
        ).fetchone()
    read_at = datetime.now().astimezone()
    study = optuna.load_study(study_name="dead", storage=postgres)
    assert [t.state.name for t in study.trials] == ["RUNNING", "COMPLETE"]
    (line,) = [x for x in r.err.splitlines() if x.startswith("trial 0 ")]
    rerun = f"icckd tune {path} --out {out2} --storage {postgres} --study-name dead"
    found = re.fullmatch(
        rf"trial 0 is still running \(worker process {proc.pid} on {socket.gethostname()}, "
        r"last heartbeat (\d+) s ago\); if that worker is gone, its trial is freed after "
        r"(\d\d:\d\d:\d\d) \(60 s without a heartbeat\): rerun then to run its replacement: "
        + re.escape(rerun),
        line,
    )
    assert found, line
    # the moment named is the last heartbeat plus 60 s, on this machine's clock: to the
    # second, give or take the seconds between the worker's line and this read
    freed = datetime.strptime(found[2], "%H:%M:%S").time()
    expected = read_at + timedelta(seconds=60 - float(silent))
    gap = abs(datetime.combine(expected.date(), freed, expected.tzinfo) - expected).total_seconds()
    assert min(gap, 86400 - gap) <= 5
    assert r.json()["trials"][-1]["state"] == "running"  # listed, not hidden
