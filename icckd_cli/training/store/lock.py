"""One writer per teacher-output store: an OS file lock on writing.lock inside it.

The writer holds an exclusive flock(2) on the file while it writes, and writes its pid,
host and start time into it. The operating system releases the lock when the file is
closed, on any exit: an exception, Ctrl-C, kill -9 or a crash, so a killed writer never
leaves a store locked (the stale text it leaves is read only while the lock is held).

A second process that would write the same store is refused at once, in one line naming
the holder, rather than made to wait: a waiting process could hang behind a writer that was
suspended or is stuck, and a refused one loses nothing (the store is kept; run the command
again once the writer has finished and it reads the store). Readers of a complete store
take no lock: a complete store is never written again.

flock works on local file systems; on NFS it depends on the mount (Linux emulates it with
POSIX locks there since 2.6.12). Where fcntl is missing (Windows) the store is unlocked.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from icckd_cli.base.errors import IcckdError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK = "writing.lock"


def holder(path: Path) -> str:
    """Who holds the lock, as its file says: 'process P on HOST since TIME'."""
    try:
        info = json.loads(path.read_text())
        return f"process {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its name yet)"


@contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """Hold the store's write lock for the block, or refuse in one line naming the holder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise IcckdError(
            f"cannot write the teacher cache {folder} ({exc.strerror or exc}); choose a "
            "writable --teacher-cache folder"
        ) from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IcckdError(
                    f"teacher-output store {folder} is being written by "
                    f"{holder(folder / LOCK)}; run this command again once that one has "
                    "finished (it then reads the store), or choose another --teacher-cache "
                    "folder"
                ) from None
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (text + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
