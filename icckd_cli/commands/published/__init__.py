"""Published teachers as icckd checkpoints: the name table, the download and the conversion.

One file per source: `crd:<arch>` (crd.py, mdistiller's release tar of the CRD CIFAR-100
teachers), `torchvision:<weights>` (torchvision.py, a torchvision weights enum's file) and
`timm:<name>[.<tag>]` (timm.py, a file or the Hugging Face cache). Files are never unpickled
(weights_only=True).
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch.hub

from icckd_cli.base.checkpoint import load_tensors, save_model
from icckd_cli.base.download import Progress, download, hash_prefix, is_url, sha256_of, verify
from icckd_cli.base.errors import IcckdError, UsageError, suggest
from icckd_cli.base.torchvision_check import check_torchvision
from icckd_cli.commands.evaluation import evaluate_checkpoint
from icckd_cli.commands.published.crd import CRD_TEACHERS, crd_teacher, read_crd_member
from icckd_cli.commands.published.record import Published
from icckd_cli.commands.published.timm import locate, resolve_timm
from icckd_cli.commands.published.torchvision import TORCHVISION_ARCHS, torchvision_teacher
from icckd_cli.data.registry import cache_dir
from icckd_cli.models import create_model
from icckd_cli.models.loading import load_state_strict, read_pth_state


def known_names() -> list[str]:
    """Every name fetch-teacher accepts."""
    names = [f"crd:{a}" for a in CRD_TEACHERS]
    check_torchvision()
    from torchvision import models

    for enum_name in TORCHVISION_ARCHS:
        names += [f"torchvision:{enum_name}.{w.name}" for w in getattr(models, enum_name)]
    return names


def resolve(name: str) -> Published:
    """A published teacher by name; UsageError naming the choices if it is unknown."""
    kind, _, rest = name.partition(":")
    if kind == "crd" and rest in CRD_TEACHERS:
        return crd_teacher(name, rest)
    if kind == "torchvision":
        found = torchvision_teacher(name, rest)
        if found is not None:
            return found
    if kind == "timm":
        info = resolve_timm(name, rest)
        return Published(name, info["arch"], f"hf://{info['repo']}", info["dataset"],
                         extra=info["extra"], model_args=info["model_args"], hub=info)  # fmt: skip
    raise UsageError(
        f"unknown published teacher '{name}'.{suggest(name, known_names())} Choose crd:ARCH "
        f"({', '.join(CRD_TEACHERS)}), torchvision:WEIGHTS, e.g. "
        "torchvision:ResNet34_Weights.IMAGENET1K_V1, or timm:NAME[.TAG]"
    )


def cached_path(url: str, torchvision: bool) -> Path:
    """Where a download is kept: torch.hub's cache for torchvision's own URLs, else ours."""
    base = Path(urlparse(url).path).name or "download"
    if torchvision:
        return Path(torch.hub.get_dir()) / "checkpoints" / base
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]  # a mirror never shadows another
    return cache_dir() / "downloads" / f"{digest}-{base}"


def obtain(pub: Published, source: str | None, progress: Progress | None) -> tuple[Path, str]:
    """The file on disk (downloaded or given) and the URL or path it came from."""
    if pub.hub is not None:  # timm: a file given or the Hugging Face cache, never the network
        path = locate(pub.name, pub.hub, source)
        return path, str(path.absolute())  # the snapshot's name, not the blob it links to
    if source is not None and not is_url(source):
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"--from {source} is not a file or a URL; check the path")
        return path, str(path.resolve())
    url = source or pub.url
    official = source is None and pub.name.startswith("torchvision:")
    return download(url, cached_path(url, official), progress), url


def _read_state(pub: Published, path: Path) -> dict[str, Any]:
    """The state dict: from the tar's member (crd), the `.pth` file, or a safetensors file."""
    if path.suffix == ".safetensors":
        return load_tensors(path)
    if pub.member is None or not tarfile.is_tarfile(path):
        return read_pth_state(path)  # a .pth downloaded by hand is taken as it is
    return read_crd_member(path, pub.member)


def fetch_teacher(
    name: str,
    out: Path,
    source: str | None = None,
    sha256: str | None = None,
    progress: Progress | None = None,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Download (or take) a published teacher, convert it, save it at `out`; its metadata.

    `data_dir`, where given, is recorded as the data set's folder (eval and distill use it).
    """
    pub = resolve(name)  # an unknown name fails before anything is downloaded
    path, origin = obtain(pub, source, progress)
    # ours to remove from the cache if wrong (never a file of the Hugging Face cache)
    downloaded = pub.hub is None and (source is None or is_url(source))
    digest = sha256_of(path)
    verify(path, digest, sha256, str(path), remove=downloaded)
    # torchvision's rule (torch.hub check_hash): the file's own name carries a sha256 prefix;
    # by default that is the official file's, a mirror or a hand-downloaded file keeps it
    prefix = hash_prefix(urlparse(origin).path) if pub.name.startswith("torchvision:") else None
    verify(path, digest, prefix, str(path), remove=downloaded)
    state = _read_state(pub, path)
    model = create_model(pub.arch, pub.dataset["num_classes"], **pub.model_args)
    load_state_strict(model, state, f"{name} ({path})")
    dataset = {**pub.dataset, "data_dir": str(Path(data_dir).resolve()) if data_dir else None}
    meta = {
        "kind": "teacher",
        "arch": pub.arch,
        "num_classes": pub.dataset["num_classes"],
        "model_args": pub.model_args,
        "dataset": dataset,
        "config": {},
        "source": {
            "name": name,
            "url": origin,
            "file": pub.member,
            "sha256": digest,
            "verified": bool(sha256 or prefix),
            **pub.extra,
        },
    }
    save_model(out, model, meta)
    return meta


def evaluate_if_present(
    out: Path, device: str = "auto", batch_size: int = 512
) -> tuple[dict[str, Any] | None, str | None]:
    """Metrics on the recorded data set's test split, or None and why it was not measured."""
    try:
        metrics = evaluate_checkpoint(
            out, download=False, split="test", device=device, batch_size=batch_size
        )
    except IcckdError as exc:  # no data here (or no such data set on this install)
        return None, exc.message
    return metrics, None
