"""The model zoo: exact CRD/RepDistiller layouts, the ZooModel API, and name lookup."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from icckd_cli.base.errors import UsageError
from icckd_cli.models import ZooModel, create_model, feature_dim, list_models
from icckd_cli.models.registry import describe_zoo

# name -> (parameters at 100 classes, feature_dim, state-dict entries, layout fingerprint).
# The fingerprint hashes the sorted "key:shape" rows (buffers included), so any renamed,
# missing or reshaped tensor breaks strict loading of published teacher checkpoints.
ZOO: dict[str, tuple[int, int, int, str]] = {
    "resnet8": (83_892, 64, 56, "166d31a811b31c5f"),
    "resnet14": (181_108, 64, 92, "8525efa6fc491f19"),
    "resnet20": (278_324, 64, 128, "6db44f39e3bff21f"),
    "resnet32": (472_756, 64, 200, "325ee6108709f7b5"),
    "resnet44": (667_188, 64, 272, "f1263f7b0ed71e1a"),
    "resnet56": (861_620, 64, 344, "3977b81559d8630f"),
    "resnet110": (1_736_564, 64, 668, "7f8e5ac1814e480a"),
    "resnet8x4": (1_233_540, 256, 62, "5d5871b403f3a649"),
    "resnet32x4": (7_433_860, 256, 206, "610ad29043c56b33"),
    "wrn_16_1": (180_916, 64, 82, "f6cf46040022f13d"),
    "wrn_16_2": (703_284, 128, 83, "bdbc50a2b3205f84"),
    "wrn_40_1": (569_780, 64, 226, "deef22602ae7584b"),
    "wrn_40_2": (2_255_156, 128, 227, "bf5731c8e8e2b95f"),
    "vgg8": (3_965_028, 512, 37, "d9f8d7533423754e"),
    "vgg11": (9_277_284, 512, 58, "6592bd1869a5938f"),
    "vgg13": (9_462_180, 512, 72, "7bec65f1ca17a0bf"),
    "vgg16": (14_774_436, 512, 93, "b420ddff7e4306ec"),
    "vgg19": (20_086_692, 512, 114, "2d318270df30c723"),
    "ResNet50": (23_705_252, 2048, 320, "d4a9e0738c8f8385"),
    "MobileNetV2": (812_836, 1280, 320, "10e9036e17013c38"),
    "ShuffleV1": (949_258, 960, 296, "eb3bcbc847930cce"),
    "ShuffleV2": (1_355_528, 1024, 338, "b7e2c3e764687767"),
    "tv_resnet18": (11_227_812, 512, 122, "6a22715afcc02d5f"),
    "tv_resnet34": (21_335_972, 512, 218, "7dab572b11d2c161"),
    "tv_resnet50": (23_712_932, 2048, 320, "b61a065606cbc4f1"),
    "tv_mobilenet_v2": (2_351_972, 1280, 314, "b1924d0ce7de3166"),
    "MobileNetV1": (3_309_476, 1024, 164, "abb444bd6ce39566"),
}

# Keys and shapes read off the reference code; None means the key must NOT exist.
REFERENCE_KEYS: dict[str, dict[str, tuple[int, ...] | None]] = {
    "resnet8": {
        "conv1.weight": (16, 3, 3, 3),
        "bn1.running_mean": (16,),
        "bn1.num_batches_tracked": (),
        "layer1.0.conv1.weight": (16, 16, 3, 3),
        "layer1.0.downsample.0.weight": None,
        "layer2.0.downsample.0.weight": (32, 16, 1, 1),
        "layer2.0.downsample.1.running_var": (32,),
        "layer3.0.conv2.weight": (64, 64, 3, 3),
        "fc.weight": (100, 64),
        "fc.bias": (100,),
    },
    "resnet8x4": {
        "conv1.weight": (32, 3, 3, 3),
        "layer1.0.downsample.0.weight": (64, 32, 1, 1),
        "fc.weight": (100, 256),
    },
    "resnet32x4": {"layer3.4.bn2.weight": (256,), "layer3.5.conv1.weight": None},
    "resnet110": {"layer3.17.conv2.weight": (64, 64, 3, 3), "layer3.18.conv1.weight": None},
    "wrn_16_1": {
        "block1.layer.0.convShortcut.weight": None,
        "block2.layer.0.convShortcut.weight": (32, 16, 1, 1),
        "block2.layer.1.convShortcut.weight": None,
    },
    "wrn_40_2": {
        "conv1.weight": (16, 3, 3, 3),
        "block1.layer.0.bn1.weight": (16,),
        "block1.layer.0.convShortcut.weight": (32, 16, 1, 1),
        "block1.layer.5.conv2.weight": (32, 32, 3, 3),
        "block3.layer.0.convShortcut.weight": (128, 64, 1, 1),
        "bn1.running_var": (128,),
        "fc.weight": (100, 128),
    },
    "vgg8": {
        "block0.0.weight": (64, 3, 3, 3),
        "block0.0.bias": (64,),
        "block0.1.weight": (64,),
        "block0.2.weight": None,
        "block4.0.weight": (512, 512, 3, 3),
        "classifier.weight": (100, 512),
    },
    "vgg13": {"block0.3.weight": (64, 64, 3, 3), "block0.4.running_mean": (64,)},
    "vgg19": {"block4.9.weight": (512, 512, 3, 3), "block4.10.weight": (512,)},
    "ResNet50": {
        "conv1.weight": (64, 3, 3, 3),
        "layer1.0.shortcut.0.weight": (256, 64, 1, 1),
        "layer1.0.shortcut.1.weight": (256,),
        "layer1.1.shortcut.0.weight": None,
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "linear.weight": (100, 2048),
    },
    "MobileNetV2": {
        "conv1.0.weight": (16, 3, 3, 3),
        "conv1.1.weight": (16,),
        "blocks.0.0.conv.0.weight": (16, 16, 1, 1),
        "blocks.0.0.conv.3.weight": (16, 1, 3, 3),
        "blocks.0.0.conv.6.weight": (8, 16, 1, 1),
        "blocks.1.0.conv.0.weight": (48, 8, 1, 1),
        "blocks.6.0.conv.7.weight": (160,),
        "conv2.0.weight": (1280, 160, 1, 1),
        "classifier.0.weight": (100, 1280),
        "classifier.0.bias": (100,),
    },
    "ShuffleV1": {
        "conv1.weight": (24, 3, 1, 1),
        "layer1.0.conv1.weight": (54, 24, 1, 1),
        "layer1.0.conv3.weight": (216, 18, 1, 1),
        "layer2.0.conv1.weight": (60, 80, 1, 1),
        "linear.weight": (100, 960),
    },
    "ShuffleV2": {
        "conv1.weight": (24, 3, 1, 1),
        "layer1.0.conv1.weight": (24, 1, 3, 3),
        "layer1.0.conv2.weight": (58, 24, 1, 1),
        "layer1.1.conv1.weight": (58, 58, 1, 1),
        "layer3.3.bn3.running_var": (232,),
        "conv2.weight": (1024, 464, 1, 1),
        "linear.weight": (100, 1024),
    },
    # mdistiller/models/imagenet/mobilenetv1.py: model.0 stem, model.1..13 separable blocks
    "MobileNetV1": {
        "model.0.0.weight": (32, 3, 3, 3),
        "model.0.1.running_var": (32,),
        "model.1.0.weight": (32, 1, 3, 3),
        "model.1.3.weight": (64, 32, 1, 1),
        "model.1.4.weight": (64,),
        "model.13.3.weight": (1024, 1024, 1, 1),
        "model.14.weight": None,
        "fc.weight": (100, 1024),
    },
}

HEAD_PREFIX = {
    "vgg": "classifier.",
    "wrn": "fc.",
    "resnet": "fc.",
    "MobileNetV2": "classifier.0.",
    "tv_resnet": "fc.",
    "tv_mobilenet_v2": "classifier.1.",
    "MobileNetV1": "fc.",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Run single-threaded: tiny batches gain nothing from threads and lose a lot to contention."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _meta_model(name: str, num_classes: int = 100) -> ZooModel:
    """Build on the meta device: real structure, no memory or init cost."""
    with torch.device("meta"):
        return create_model(name, num_classes)


def _layout(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _fingerprint(model: nn.Module) -> str:
    rows = sorted(f"{k}:{shape}" for k, shape in _layout(model).items())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def _head_prefix(name: str) -> str:
    for family, prefix in HEAD_PREFIX.items():
        if name.startswith(family):
            return prefix
    return "linear."  # ResNet50, ShuffleV1, ShuffleV2


def test_list_models_is_the_zoo_in_order() -> None:
    assert list_models() == list(ZOO)


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_and_feature_dim(name: str) -> None:
    params, dim, _, _ = ZOO[name]
    model = _meta_model(name)
    assert isinstance(model, ZooModel)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.feature_dim == dim == feature_dim(name)
    assert (model.arch, model.num_classes) == (name, 100)


@pytest.mark.parametrize("name", list_models())
def test_state_dict_layout_is_pinned(name: str) -> None:
    _, _, entries, fingerprint = ZOO[name]
    model = _meta_model(name)
    assert len(model.state_dict()) == entries
    assert _fingerprint(model) == fingerprint


@pytest.mark.parametrize("name", sorted(REFERENCE_KEYS))
def test_reference_keys(name: str) -> None:
    layout = _layout(_meta_model(name))
    for key, shape in REFERENCE_KEYS[name].items():
        if shape is None:
            assert key not in layout, key
        else:
            assert layout.get(key) == shape, key


@pytest.mark.parametrize("name", list_models())
def test_num_classes_only_changes_the_head(name: str) -> None:
    at_100, at_10 = _layout(_meta_model(name)), _layout(_meta_model(name, 10))
    assert at_100.keys() == at_10.keys()
    changed = {k for k in at_100 if at_100[k] != at_10[k]}
    prefix = _head_prefix(name)
    assert changed == {prefix + "weight", prefix + "bias"}
    assert at_10[prefix + "weight"] == (10, ZOO[name][1])


@pytest.mark.parametrize("name", list_models())
def test_strict_round_trip_of_layout(name: str) -> None:
    source, target = _meta_model(name), _meta_model(name)
    result = target.load_state_dict(source.state_dict(), strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV2"])
def test_round_trip_reproduces_outputs(name: str) -> None:
    torch.manual_seed(0)
    source, target = create_model(name).eval(), create_model(name).eval()
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", list_models())
def test_forward_shapes_and_split(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
        assert logits.shape == (2, 100)
        assert feats.shape == (2, model.feature_dim)
        torch.testing.assert_close(model(x), logits)
        torch.testing.assert_close(model.forward_features(x), feats)
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), logits)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1"])
def test_larger_inputs_and_channels_last(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    with torch.no_grad():
        for size in (32, 64):
            x = torch.randn(2, 3, size, size)
            logits, feats = model(x, return_features=True)
            assert logits.shape == (2, 10) and feats.shape == (2, model.feature_dim)
            last = model(x.contiguous(memory_format=torch.channels_last))
            torch.testing.assert_close(last, logits, rtol=1e-4, atol=1e-5)


def test_training_step_reaches_every_parameter() -> None:
    """A cross-entropy step gives every parameter a finite gradient that is not all zero."""
    torch.manual_seed(0)
    model = create_model("ShuffleV2", num_classes=10).train()
    logits = model(torch.randn(4, 3, 32, 32))
    F.cross_entropy(logits, torch.tensor([0, 3, 5, 9])).backward()
    named = dict(model.named_parameters())
    assert named, "ShuffleV2 has no parameters"
    missing = [n for n, p in named.items() if p.grad is None]
    assert not missing, f"no gradient reaches {missing}"
    broken = [n for n, p in named.items() if not torch.isfinite(p.grad).all()]
    assert not broken, f"non-finite gradients in {broken}"
    # a parameter the loss does not depend on would get an all-zero gradient here
    zero = [n for n, p in named.items() if not p.grad.abs().sum() > 0]
    assert not zero, f"all-zero gradients in {zero}"


def test_reference_initialisation() -> None:
    torch.manual_seed(0)
    resnet = create_model("resnet32x4").state_dict()
    # He-normal with fan_out = 3 * 3 * 256.
    assert abs(resnet["layer3.1.conv1.weight"].std().item() - (2 / (9 * 256)) ** 0.5) < 1e-3
    assert torch.equal(resnet["bn1.weight"], torch.ones(32))
    vgg = create_model("vgg8").state_dict()
    assert abs(vgg["classifier.weight"].std().item() - 0.01) < 1e-3
    assert not vgg["classifier.bias"].any() and not vgg["block0.0.bias"].any()
    assert not create_model("wrn_16_1").state_dict()["fc.bias"].any()


@pytest.mark.parametrize(
    ("alias", "name"),
    [("mobilenetv2", "MobileNetV2"), ("RESNET8", "resnet8"), ("shufflev2", "ShuffleV2")],
)
def test_case_insensitive_names(alias: str, name: str) -> None:
    assert _meta_model(alias).arch == name
    assert feature_dim(alias) == ZOO[name][1]


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UsageError) as info:
        create_model("resnet2")
    message = info.value.message
    assert message.startswith("unknown architecture 'resnet2'. Did you mean: ")
    assert "resnet20" in message
    assert message.endswith("? Run 'icckd models' to list them.")
    assert info.value.exit_code == 2


def test_unknown_name_without_suggestion() -> None:
    with pytest.raises(UsageError) as info:
        create_model("zzzz")
    assert info.value.message == "unknown architecture 'zzzz'. Run 'icckd models' to list them."


def test_bad_num_classes() -> None:
    with pytest.raises(UsageError):
        create_model("resnet8", num_classes=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV2"])
def test_compiles_without_graph_breaks(name: str) -> None:
    model = create_model(name, num_classes=10).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        for size in (32, 64):
            x = torch.randn(2, 3, size, size)
            logits, feats = compiled(x, return_features=True)
            torch.testing.assert_close(logits, model(x))
            assert feats.shape == (2, model.feature_dim)


def test_describe_zoo_counts_parameters_on_the_meta_device_as_a_real_model_has_them() -> None:
    real = create_model("resnet8", 100)  # built for real, on the CPU
    params = sum(p.numel() for p in real.parameters())
    assert describe_zoo("RESNET8") == [("resnet8", params, 64, 32)]  # the glob ignores case
    assert [row[0] for row in describe_zoo("resnet8*")] == ["resnet8", "resnet8x4"]
    assert describe_zoo("no_such_*") == []
