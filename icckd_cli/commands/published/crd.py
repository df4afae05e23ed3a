"""`crd:<arch>`: the CRD CIFAR-100 teachers, read from mdistiller's release tar.

`cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth` of the tar is the maintained mirror of
RepDistiller's CRD teachers; the member is read without unpickling (weights_only=True).
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError
from icckd_cli.commands.published.record import Published, dataset_record
from icckd_cli.models.loading import read_pth_state

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


def crd_teacher(name: str, arch: str) -> Published:
    """crd:<arch> of CRD_TEACHERS: its network, the release tar and the member to read."""
    dataset = dataset_record("cifar100", CIFAR100_CLASSES, *CIFAR100_STATS, 32)
    return Published(name, arch, CRD_URL, dataset, member=CRD_MEMBER.format(arch=arch))


def read_crd_member(path: Path, wanted: str) -> dict[str, Any]:
    """The state dict of the tar's member `wanted`; IcckdError if damaged or absent."""
    with tempfile.TemporaryDirectory() as tmp:
        member = Path(tmp) / "ckpt_epoch_240.pth"
        try:
            with tarfile.open(path) as tar:
                # made as `tar cf x.tar ./cifar_teachers`, members are named "./cifar_..."
                found = [m for m in tar.getmembers() if m.name.removeprefix("./") == wanted]
                fh = tar.extractfile(found[0]) if found else None
                if fh is not None:
                    member.write_bytes(fh.read())
        except (tarfile.TarError, OSError, EOFError):
            raise IcckdError(f"{path} is a damaged tar archive; remove it and run again") from None
        if not member.is_file():
            raise IcckdError(
                f"{path} holds no {wanted}; it is not mdistiller's cifar_teachers.tar: "
                "pass that archive (or the .pth itself) with --from"
            )
        return read_pth_state(member)
