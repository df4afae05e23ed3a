"""Intermediate features (models/features.py): every zoo network's stages, with the logits and
pooled features of its ordinary forward unchanged; timm's and torchvision's through their
own intermediate-feature APIs; named layers; the dry forward's shapes."""

from __future__ import annotations

import copy

import pytest
import torch

from icckd_cli.base.errors import UsageError
from icckd_cli.models import create_model, input_size, list_models
from icckd_cli.models.features import named_layers, stage_shapes, stages

# (C, H, W) of every map at the network's test side (32 px CIFAR nets, 64 px ImageNet nets),
# read off each family's definition: the stem, then each stage (RepDistiller's feat[:-1])
N16 = [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
X4 = [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8)]
VGG = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)]
TVR = [(64, 16, 16), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
MAPS: dict[str, list[tuple[int, int, int]]] = {
    **{f"resnet{d}": N16 for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": X4,
    "resnet32x4": X4,
    "wrn_16_1": N16,
    "wrn_40_1": N16,
    "wrn_16_2": [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8)],
    "wrn_40_2": [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8)],
    **{f"vgg{d}": VGG for d in (8, 11, 13, 16, 19)},
    "ResNet50": [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)],
    "MobileNetV2": [(16, 16, 16), (12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)],
    "ShuffleV1": [(24, 32, 32), (240, 16, 16), (480, 8, 8), (960, 4, 4)],
    "ShuffleV2": [(24, 32, 32), (116, 16, 16), (232, 8, 8), (464, 4, 4)],
    "tv_resnet18": TVR,
    "tv_resnet34": TVR,
    "tv_resnet50": [(64, 16, 16), (256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)],
    "tv_mobilenet_v2": [(16, 32, 32), (24, 16, 16), (32, 8, 8), (96, 4, 4), (1280, 2, 2)],
    "MobileNetV1": [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (1024, 2, 2)],
}
# families whose stages end in a ReLU: there the pre-activation differs from the map
WITH_PREACT = ("resnet", "wrn", "vgg", "ResNet50", "ShuffleV1", "tv_resnet", "MobileNetV1")


def _side(name: str) -> int:
    return 64 if input_size(name) == 224 else 32


def test_every_zoo_name_is_pinned() -> None:
    assert sorted(MAPS) == sorted(list_models())


@pytest.mark.parametrize("name", list_models())
def test_stages_keep_the_forward_and_have_the_pinned_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 7)
    reference = copy.deepcopy(model)
    x = torch.randn(3, 3, _side(name), _side(name))
    # in training mode: the same outputs and the same BatchNorm statistics as forward
    torch.manual_seed(1)  # the same dropout mask (tv_mobilenet_v2's head) in both
    logits, pooled = reference.train()(x, return_features=True)
    torch.manual_seed(1)
    out = stages(model.train(), x)
    assert torch.equal(out.logits, logits) and torch.equal(out.pooled, pooled)
    theirs = reference.state_dict()
    for key, ours in model.state_dict().items():
        assert torch.equal(ours, theirs[key]), key
    assert [tuple(m.shape[1:]) for m in out.maps] == MAPS[name]
    assert [p.shape for p in out.preact] == [m.shape for m in out.maps]
    assert torch.equal(out.preact[0], out.maps[0])  # the stem is read after its activation
    if name.startswith(WITH_PREACT):
        # a map is its pre-activation through the stage's last ReLU, which gives negatives
        for m, p in zip(out.maps[1:], out.preact[1:], strict=True):
            assert p.min() < 0
            if not name.startswith("wrn"):  # wrn's maps are raw, its preact the next BN's
                assert torch.equal(m, torch.relu(p))
    if name.startswith("wrn"):  # the last pre-activation is the final BN, before ReLU and pool
        assert torch.equal(torch.relu(out.preact[-1]).mean((2, 3)), pooled)
    norms = model.stage_norms()
    if norms is not None:
        assert [n.num_features for n in norms] == [c for c, _, _ in MAPS[name][1:]]


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_2", "MobileNetV2"])
def test_gradient_reaches_every_parameter_through_the_stages(name: str) -> None:
    model = create_model(name, 5)
    out = stages(model, torch.randn(2, 3, 32, 32))
    (out.logits.sum() + sum(m.mean() for m in out.maps)).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_stage_shapes_is_a_dry_forward_that_leaves_the_model_as_it_was() -> None:
    model = create_model("resnet8", 10).train()
    before = copy.deepcopy(model.state_dict())
    shapes = stage_shapes(model, 32)
    assert shapes.maps == tuple(MAPS["resnet8"]) and shapes.pooled == 64
    assert shapes.channels == (16, 16, 32, 64)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_named_layers_read_the_modules_in_the_order_given() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    out = stages(model, x, ["layer3", "layer1.0.bn1"])
    reference = model.forward_stages(x)
    assert torch.equal(out.maps[0], reference.maps[3])
    assert tuple(out.maps[1].shape) == (2, 16, 32, 32)
    assert torch.equal(out.logits, model(x))


def test_named_layers_refuse_an_unknown_or_flat_layer() -> None:
    model = create_model("resnet8", 10)
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(UsageError, match=r"names 'layer9', which resnet8 has no module of"):
        named_layers(model, x, ["layer9"])
    with pytest.raises(UsageError, match=r"fc of resnet8 gives no \(B, C, H, W\) feature map"):
        named_layers(model, x, ["fc"])


@pytest.mark.parametrize(
    ("name", "args", "maps"),
    [
        ("timm:resnet18", {}, [(64, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)]),
        ("timm:vit_tiny_patch16_224", {"img_size": 32}, [(192, 2, 2)] * 12),
        ("torchvision:resnet18", {}, TVR[:1] + [(64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)]),
        (
            "torchvision:mobilenet_v3_small",
            {},
            [(16, 16, 16), (16, 8, 8), (24, 4, 4), (48, 2, 2), (576, 1, 1)],
        ),
    ],
)
def test_library_models_through_their_own_apis(name: str, args: dict, maps: list) -> None:
    torch.manual_seed(0)
    model = create_model(name, 6, **args).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = stages(model, x)
        logits, pooled = model(x, return_features=True)
    assert torch.equal(out.logits, logits) and torch.equal(out.pooled, pooled)
    assert [tuple(m.shape[1:]) for m in out.maps] == maps
    assert model.stage_norms() is None
    assert "_stages" not in model.state_dict()  # the cached extractor is no sub-module
