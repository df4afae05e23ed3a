"""Published teachers as icckd checkpoints: the CRD CIFAR-100 zoo, torchvision's and timm's.

`crd:<arch>` reads `cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth` from mdistiller's
release tar (the maintained mirror of RepDistiller's CRD teachers); `torchvision:<weights>`
reads a torchvision weights enum's file into the matching `tv_` network (or, for any other
enum, `torchvision:<builder>`) and records the enum's class names and preprocessing;
`timm:<name>[.<tag>]` takes a file or the Hugging Face cache (fetch_timm.py). Files are
never unpickled (weights_only=True).
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch.hub

from icckd_cli.base.checkpoint import load_tensors, save_model
from icckd_cli.base.download import Progress, download, hash_prefix, is_url, sha256_of, verify
from icckd_cli.base.errors import IcckdError, UsageError, suggest
from icckd_cli.base.torchvision_check import check_torchvision
from icckd_cli.data.registry import cache_dir
from icckd_cli.models import create_model, torchvision_adapter
from icckd_cli.models.loading import load_state_strict, read_pth_state
from icckd_cli.work.evaluation import evaluate_checkpoint
from icckd_cli.work.fetch_timm import locate, resolve_timm

# mdistiller's GitHub release "checkpoints" (see its README, "CIFAR-100"), and the layout
# mdistiller/models/cifar/__init__.py reads from the unpacked tar
CRD_URL = (
    "https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar"
)
CRD_MEMBER = "cifar_teachers/{arch}_vanilla/ckpt_epoch_240.pth"
CRD_TEACHERS = ("wrn_40_2", "resnet56", "resnet110", "resnet32x4", "vgg13", "ResNet50")
CIFAR100_STATS = ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762])
# CIFAR-100's fine labels in label order (alphabetical, as torchvision reads them)
CIFAR100_CLASSES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl
boy bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud
cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster
house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle
mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew
skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank
telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf
woman worm""".split()

# torchvision weights enum -> our network of the same layout
TORCHVISION_ARCHS = {
    "ResNet18_Weights": "tv_resnet18",
    "ResNet34_Weights": "tv_resnet34",
    "ResNet50_Weights": "tv_resnet50",
    "MobileNet_V2_Weights": "tv_mobilenet_v2",
}


@dataclass
class Published:
    """What a name resolves to: the network, where its file lives, what it was trained on."""

    name: str
    arch: str
    url: str
    dataset: dict[str, Any]
    member: str | None = None  # the file inside a tar archive
    extra: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)  # builder arguments of `arch`
    hub: dict[str, Any] | None = None  # timm: the Hugging Face repository to look up


def _dataset(
    name: str, classes: list[str], mean: list[float], std: list[float], size: int
) -> dict[str, Any]:
    """The data-set record of a checkpoint (the fields of data.DataSpec)."""
    return {"name": name, "num_classes": len(classes), "classes": classes, "mean": mean,
            "std": std, "image_size": size, "flip": True, "data_dir": None}  # fmt: skip


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
        dataset = _dataset("cifar100", CIFAR100_CLASSES, *CIFAR100_STATS, 32)
        return Published(name, rest, CRD_URL, dataset, member=CRD_MEMBER.format(arch=rest))
    if kind == "torchvision":
        found = _torchvision(name, rest)
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


def _torchvision_builder(enum_name: str) -> tuple[str, dict[str, Any]] | None:
    """Our network for a torchvision weights enum: a tv_ name, else torchvision:<builder>."""
    if enum_name in TORCHVISION_ARCHS:
        return TORCHVISION_ARCHS[enum_name], {}
    check_torchvision()
    from torchvision import models

    for builder in torchvision_adapter.names():
        try:
            enum = models.get_model_weights(builder)
        except (ValueError, KeyError):
            continue
        if enum.__name__ == enum_name:
            return f"torchvision:{builder}", {}
    return None


def _torchvision(name: str, rest: str) -> Published | None:
    """torchvision:<Enum>.<member> through torchvision's weights API, or None if unknown."""
    check_torchvision()
    from torchvision import models

    enum_name, _, member = rest.partition(".")
    found = _torchvision_builder(enum_name)
    if found is None:
        return None
    arch, args = found
    weights = getattr(getattr(models, enum_name), member, None)
    if weights is None:
        return None
    if arch.startswith("torchvision:") and "min_size" in weights.meta:
        # ViT weights of 384 px exist
        if torchvision_adapter.size_arg(arch.partition(":")[2]) == "image_size":
            args = {"image_size": int(weights.meta["min_size"][0])}
    tf = weights.transforms()  # torchvision's ImageClassification preset
    categories = list(weights.meta["categories"])
    crop = int(tf.crop_size[0])
    dataset = _dataset("imagenet", categories, list(tf.mean), list(tf.std), crop)
    # display names ("tench") of the classes in sorted-wnid order, which ILSVRC folders
    # (train/n01440764/...) give too: the imagenet data set matches them by order
    dataset["class_order"] = "wnid"
    preprocessing = {
        "resize_size": list(tf.resize_size),
        "crop_size": list(tf.crop_size),
        "mean": list(tf.mean),
        "std": list(tf.std),
        "interpolation": tf.interpolation.value,
    }
    extra = {"preprocessing": preprocessing, "published_metrics": weights.meta.get("_metrics")}
    return Published(name, arch, weights.url, dataset, extra=extra, model_args=args)


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
    with tempfile.TemporaryDirectory() as tmp:
        member = Path(tmp) / "ckpt_epoch_240.pth"
        try:
            with tarfile.open(path) as tar:
                # made as `tar cf x.tar ./cifar_teachers`, members are named "./cifar_..."
                found = [m for m in tar.getmembers() if m.name.removeprefix("./") == pub.member]
                fh = tar.extractfile(found[0]) if found else None
                if fh is not None:
                    member.write_bytes(fh.read())
        except (tarfile.TarError, OSError, EOFError):
            raise IcckdError(f"{path} is a damaged tar archive; remove it and run again") from None
        if not member.is_file():
            raise IcckdError(
                f"{path} holds no {pub.member}; it is not mdistiller's cifar_teachers.tar: "
                "pass that archive (or the .pth itself) with --from"
            )
        return read_pth_state(member)


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
