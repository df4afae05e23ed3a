"""Downloads into the cache: resumable, verified, renamed into place only when complete.

A download writes `NAME.part` beside its final name and resumes it with an HTTP Range
request; the final name appears only by an atomic rename after the whole file arrived, so
the cache never holds half a file under a name that is used. The engine never prints:
progress goes to a callback.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError

CHUNK = 1 << 20
TIMEOUT_S = 30
# torch.hub's naming rule: "<name>-<first hex digits of the sha256>.<ext>"
HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")

Progress = Callable[[str, dict[str, Any]], None]


def is_url(source: str) -> bool:
    """True for http(s) and file URLs, false for a path on disk."""
    return source.split("://", 1)[0].lower() in ("http", "https", "file")


def sha256_of(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def hash_prefix(name: str) -> str | None:
    """The sha256 prefix a torch.hub-style file name carries ('resnet34-b627a593.pth')."""
    found = HASH_PREFIX.search(Path(name).name)
    return found.group(1) if found and len(found.group(1)) >= 8 else None


def verify(path: Path, digest: str, expected: str | None, what: str, remove: bool) -> None:
    """Compare a digest with the expected one (full or a prefix); `remove` a wrong download."""
    if not expected or digest.startswith(expected.lower()):
        return
    if remove:  # a cached download that fails its check must not be used again
        Path(path).unlink(missing_ok=True)
    where = " (removed from the cache)" if remove else ""
    raise IcckdError(
        f"{what} has sha256 {digest[:16]}..., not the expected {expected[:16]}...; it is "
        f"damaged or another file{where}: run again, or pass the right file with --from"
    )


def _offline_hint() -> str:
    return "download it by hand and pass the file with --from FILE (or a mirror with --from URL)"


def download(url: str, dest: Path, progress: Progress | None = None) -> Path:
    """`url` saved at `dest` (kept: a second call reads the cache); resumes a `.part` file."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "icckd"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the range starts at the end: the .part is complete
            os.replace(part, dest)
            return dest
        raise IcckdError(f"cannot download {url} (HTTP {exc.code}); {_offline_hint()}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise IcckdError(f"cannot download {url} ({reason}); {_offline_hint()}") from None
    with response:
        resumed = have > 0 and getattr(response, "status", 200) == 206
        done = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length and length.isdigit() else None
        notify = progress or (lambda event, info: None)
        notify("download", {"url": url, "done": done, "total": total})
        try:
            with part.open("ab" if resumed else "wb") as fh:
                while block := response.read(CHUNK):
                    fh.write(block)
                    done += len(block)
                    notify("download", {"url": url, "done": done, "total": total})
                fh.flush()
                os.fsync(fh.fileno())
        except (http.client.HTTPException, OSError) as exc:  # the connection broke off
            raise _stopped(url, done, total) from exc
    if total is not None and done != total:
        raise _stopped(url, done, total)
    os.replace(part, dest)
    return dest


def _stopped(url: str, done: int, total: int | None) -> IcckdError:
    """The error for a download cut short; the `.part` file stays to be resumed."""
    of = f" of {total:,}" if total is not None else ""
    return IcckdError(
        f"the download of {url} stopped at {done:,}{of} bytes; run the command again to "
        "resume it, or pass a complete file with --from FILE"
    )
