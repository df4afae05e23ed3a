"""The torch/torchvision pair: a torchvision built for another torch is one line, not a traceback.

A torchvision wheel registers compiled operators (e.g. `torchvision::nms`) with the torch it was
built for; under another torch `import torchvision` raises `RuntimeError: operator
torchvision::nms does not exist`. Commands that will need torchvision call `check_torchvision`
at start-up, and the places that import it lazily call it first, so the fault is told before
any run trains.
"""

from __future__ import annotations

import functools
from importlib import metadata

from icckd_cli.base.errors import RUNTIME, IcckdError, first_line


def _version(package: str) -> str:
    """The installed version of `package`, or 'unknown' (a source build without metadata)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def matching_torchvision(torch_version: str) -> str:
    """The torchvision release series built for `torch_version`: '0.29.*' for torch 2.14.

    torchvision 0.15 was released with torch 2.0 and each torch 2.N since with 0.(15 + N)
    (the compatibility table of github.com/pytorch/vision's README).
    """
    parts = torch_version.split("+")[0].split(".")
    if len(parts) >= 2 and parts[0] == "2" and parts[1].isdigit():
        return f"0.{15 + int(parts[1])}.*"
    return "<the release for it>"


def pair_error(cause: BaseException) -> IcckdError:
    """The one-line refusal of a torchvision that does not load under the installed torch."""
    torch_v, vision_v = _version("torch"), _version("torchvision")
    base = torch_v.split("+")[0]
    return IcckdError(
        f"torchvision {vision_v} does not work with torch {torch_v} ({first_line(cause)}); "
        f"install a torchvision built for torch {base}: "
        f"pip install torch=={base} torchvision=={matching_torchvision(torch_v)}",
        RUNTIME,
    )


@functools.cache
def _import_error() -> IcckdError | None:
    """Import torchvision once; the refusal if it does not load (a missing one is not refused
    here: torchvision is a dependency, and a missing one says so on its own)."""
    try:
        import torchvision  # noqa: F401
    except ModuleNotFoundError:
        return None
    except (RuntimeError, ImportError, OSError) as exc:  # operators of another torch
        return pair_error(exc)
    return None


def check_torchvision() -> None:
    """Refuse, in one line with exit code 1, a torchvision that does not load with this torch."""
    error = _import_error()
    if error is not None:
        raise error
