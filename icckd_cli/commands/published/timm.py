"""`fetch-teacher timm:<name>[.<tag>]`: a timm checkpoint as an icckd teacher, never downloaded.

The weights come from `--from FILE` (safetensors, or a `.pth`/`.bin` read by the no-code
loader) or from the local Hugging Face cache, where timm keeps what `pretrained=True`
downloaded. The cache's layout (huggingface_hub's, see its "Understand caching" guide):
`$HF_HUB_CACHE` (else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`) holds one folder
per repository, `models--<org>--<name>`, whose `refs/main` names the commit whose files are
under `snapshots/<commit>/`. timm's repositories are `timm/<name>.<tag>` holding
`model.safetensors` (older ones `pytorch_model.bin`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.models.timm_adapter import check_name, require_timm

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's own preference order


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else the default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hf_repo_dir(repo_id: str) -> Path:
    """Where the cache keeps one model repository ('timm/x.y' -> models--timm--x.y)."""
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def hf_cached_file(repo_id: str, revision: str = "main") -> Path | None:
    """The weights file of a cached repository: the snapshot `refs/<revision>` names first,
    then the other snapshots, newest first; None when none holds one."""
    repo = hf_repo_dir(repo_id)
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / revision
    first = snapshots / ref.read_text().strip() if ref.is_file() else None
    others = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for snap in [s for s in [first, *others] if s is not None]:
        for name in WEIGHT_FILES:
            if (snap / name).is_file():  # is_file follows the snapshot's link into blobs/
                return snap / name
    return None


def pretrained_cfg(rest: str) -> Any:
    """timm's pretrained config of `<name>[.<tag>]`, or a one-line error naming the tags."""
    timm = require_timm(f"timm:{rest}")
    base = check_name(rest)
    tag = rest.partition(".")[2]
    try:
        cfg = timm.models.get_pretrained_cfg(f"{base}.{tag}" if tag else base)
    except RuntimeError:  # an unknown tag
        cfg = None
    if cfg is None or not cfg.hf_hub_id:
        tags = timm.list_pretrained(f"{base}.*")
        shown = ", ".join(f"timm:{t}" for t in tags[:6]) + (", ..." if len(tags) > 6 else "")
        raise UsageError(
            f"timm has no published weights 'timm:{rest}'; "
            + (f"choose one of: {shown}" if tags else f"timm publishes none for {base}")
        )
    if not cfg.num_classes:
        raise UsageError(
            f"timm:{rest} is a feature backbone without a classification head (its weights "
            "predict no classes); icckd needs a classifier: choose a tag fine-tuned on classes"
        )
    return cfg


def class_names(pretrained: Any) -> list[str]:
    """The classes of the weights: timm's ImageNet names where it knows them, else numbers."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(pretrained.to_dict())
    if subset:
        info = ImageNetInfo(subset)
        if len(info.label_names()) == pretrained.num_classes:
            return [
                info.index_to_description(i).split(",")[0] for i in range(pretrained.num_classes)
            ]
    return [f"class_{i}" for i in range(pretrained.num_classes)]


def resolve_timm(name: str, rest: str) -> dict[str, Any]:
    """What `timm:<name>[.<tag>]` is: arch, builder arguments, data-set record, source."""
    cfg = pretrained_cfg(rest)
    base = check_name(rest)
    size = int(cfg.input_size[-1])
    # a fixed-size model (a ViT) is built at its weights' size, as timm does for the tag
    args = {"img_size": size} if cfg.fixed_input_size else {}
    classes = class_names(cfg)
    dataset = {
        "name": "imagenet", "num_classes": len(classes), "classes": classes,
        "mean": list(cfg.mean), "std": list(cfg.std), "image_size": size, "flip": True,
        "data_dir": None, "class_order": "wnid",
    }  # fmt: skip
    repo, _, revision = cfg.hf_hub_id.partition("@")
    preprocessing = {
        "input_size": list(cfg.input_size), "crop_pct": cfg.crop_pct,
        "crop_mode": cfg.crop_mode, "interpolation": cfg.interpolation,
        "mean": list(cfg.mean), "std": list(cfg.std),
    }  # fmt: skip
    return {
        "arch": f"timm:{base}",
        "model_args": args,
        "dataset": dataset,
        "repo": repo,
        "revision": revision or "main",
        "extra": {"tag": cfg.tag, "hf_hub_id": cfg.hf_hub_id, "preprocessing": preprocessing},
    }


def locate(name: str, info: dict[str, Any], source: str | None) -> Path:
    """The weights file: --from FILE, else the Hugging Face cache; never the network."""
    if source is not None:
        if "://" in source:
            raise UsageError(
                f"{name}: icckd does not download timm weights; download "
                f"{info['repo']} elsewhere and pass the file with --from FILE"
            )
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"--from {source} is not a file; check the path")
        return path
    found = hf_cached_file(info["repo"], info["revision"])
    if found is None:
        raise IcckdError(
            f"{name} is not in the Hugging Face cache ({hf_repo_dir(info['repo'])} holds no "
            f"{' or '.join(WEIGHT_FILES)}); fetch it once where there is a network (e.g. "
            f"timm.create_model('{info['repo'].partition('/')[2]}', pretrained=True)) and "
            "run again, or pass the file with --from FILE"
        )
    return found
