"""Generated image data sets for the data tests: Tiny-ImageNet's layout, ImageNet-style folders.

Every class is one solid colour, so a decoded image tells which label it must carry; sizes
and modes are mixed (greyscale, palette, CMYK JPEG, RGBA PNG) as users' folders are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# class c is COLOURS[c]; the grey one survives greyscale and CMYK round trips exactly enough
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (128, 128, 128)]
# (width, height, mode, suffix) cycled over a class's images
SHAPES = [
    (64, 64, "RGB", ".JPEG"),
    (300, 200, "RGB", ".jpg"),
    (48, 80, "L", ".png"),
    (120, 90, "CMYK", ".jpg"),
    (70, 70, "RGBA", ".png"),
    (90, 60, "P", ".png"),
]


def write_image(path: Path, colour: tuple[int, int, int], w: int, h: int, mode: str) -> None:
    """A solid image of `colour` in `mode` (greyscale keeps the colour's luminance)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (w, h), colour)
    if mode == "RGBA":
        im = im.convert("RGBA")
    elif mode != "RGB":
        im = im.convert(mode)
    quality = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    im.save(path, **quality)


def tiny_imagenet(root: Path, wnids: list[str], train: int = 3, val: int = 2) -> Path:
    """tiny-imagenet-200's layout: wnids.txt (unsorted), words.txt, train/, val/, test/."""
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")
    words = [f"{w}\tname of {w}, another name" for w in wnids] + ["n99999999\tunused class"]
    (root / "words.txt").write_text("\n".join(words) + "\n")
    lines = []
    for c, w in enumerate(wnids):
        for k in range(train):
            size = 64 if k else 80  # one image off-size: resized to 64
            mode = "L" if k == 2 else "RGB"
            write_image(
                root / "train" / w / "images" / f"{w}_{k}.JPEG", COLOURS[c], size, size, mode
            )
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
        for k in range(val):
            name = f"val_{c * val + k}.JPEG"
            write_image(root / "val" / "images" / name, COLOURS[c], 64, 64, "RGB")
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    write_image(root / "test" / "images" / "test_0.JPEG", (0, 0, 0), 64, 64, "RGB")
    return root


def image_folder(root: Path, classes: list[str], train: int = 6, val: int = 2) -> Path:
    """train/<class>/ and val/<class>/ of mixed sizes and modes, class c in COLOURS[c]."""
    for c, name in enumerate(classes):
        for split, count in (("train", train), ("val", val)):
            for k in range(count):
                w, h, mode, suffix = SHAPES[(k + c) % len(SHAPES)]
                write_image(root / split / name / f"{k:03d}{suffix}", COLOURS[c], w, h, mode)
    return root


def cifar_like(root: Path, classes: list[str], train: int, test: int) -> Path:
    """CIFAR-10's JPEG layout made here: root/cifar10-jpeg/{train,test}/<class>/, 32x32
    JPEGs of seeded noise (every image differs, as photographs do); that folder."""
    rng = np.random.default_rng(0)
    folder = root / "cifar10-jpeg"
    for split, count in (("train", train), ("test", test)):
        for name in classes:
            (folder / split / name).mkdir(parents=True)
            for k in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / split / name / f"{k:04d}.jpg", quality=95)
    return folder


# the real CIFAR-10 JPEG archive where a checkout keeps one beside the project; a test that
# needs real photographs skips without it, naming this path (pytest -rs shows the reason)
CIFAR_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tgz"


def unpack_cifar(root: Path, train: int, test: int) -> Path:
    """The first `train` and `test` JPEGs of each class unpacked from the CIFAR-10 archive
    into root; its cifar10-jpeg folder. Reading stops once every class has its share."""
    import tarfile

    wanted = {"train": train, "test": test}
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(CIFAR_ARCHIVE, "r|gz") as tar:
        for member in tar:
            parts = Path(member.name).parts  # cifar10-jpeg/<split>/<class>/<file>
            if not member.isfile() or len(parts) != 4:
                continue
            key = (parts[1], parts[2])
            if taken.get(key, 0) < wanted[parts[1]]:
                taken[key] = taken.get(key, 0) + 1
                tar.extract(member, root, filter="data")
            if len(taken) == 20 and all(taken[k] == wanted[k[0]] for k in taken):
                break
    return root / "cifar10-jpeg"
