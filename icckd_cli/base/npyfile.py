"""Whether a file is a NumPy array file (.npy), checked before numpy reads it.

For a file without the .npy header numpy's own error talks of "pickled (object) data",
which sends a user looking for pickles in what is, say, a text file under a .npy name.
"""

from __future__ import annotations

from pathlib import Path

MAGIC = b"\x93NUMPY"  # the first six bytes of every .npy file (numpy's format spec)


def is_npy(path: Path | str) -> bool:
    """Whether the file begins with the .npy header; False for a short or unreadable one."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
