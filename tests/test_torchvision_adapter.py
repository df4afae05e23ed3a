"""torchvision: models are torchvision's own: its keys, its logits, features before the head."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models

from icckd_cli.base.errors import UsageError
from icckd_cli.models import create_model, feature_dim, input_size, model_args_for, resolve_name
from icckd_cli.models.loading import load_state_strict
from icckd_cli.models.torchvision_adapter import head_modules


def _pair(name: str, num_classes: int, **args: object) -> tuple[nn.Module, nn.Module]:
    """Ours built on the meta device and given torchvision's own freshly built weights."""
    torch.manual_seed(0)
    theirs = models.get_model(name, weights=None, num_classes=num_classes, **args)
    with torch.device("meta"):
        ours = create_model(f"torchvision:{name}", num_classes, **args)
    ours = ours.to_empty(device="cpu")
    load_state_strict(ours, theirs.state_dict(), name)  # strict: torchvision's keys exactly
    assert list(ours.state_dict()) == list(theirs.state_dict())
    return ours, theirs


def test_mobilenet_v3_logits_and_features_equal_torchvision_in_both_modes() -> None:
    ours, theirs = _pair("mobilenet_v3_small", 5)
    # the head is the dropout and the final Linear; the features are the 1024-d input of both
    assert [type(m).__name__ for m in ours.head_modules] == ["Dropout", "Linear"]
    assert ours.feature_dim == 1024 == feature_dim("torchvision:mobilenet_v3_small")
    x = torch.randn(2, 3, 64, 64)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        logits, feats = ours(x, return_features=True)
        want = theirs.classifier[:2](torch.flatten(theirs.avgpool(theirs.features(x)), 1))
        assert torch.equal(logits, theirs(x))
    assert torch.equal(feats, want)
    ours.train(), theirs.train()  # dropout draws the same numbers in the same order
    torch.manual_seed(3)
    a = ours(x)
    torch.manual_seed(3)
    assert torch.equal(a, theirs(x))


@pytest.mark.slow
def test_vit_b_16_at_32_pixels_equals_torchvision() -> None:
    assert model_args_for("torchvision:vit_b_16", {}, 32) == {"image_size": 32}
    ours, theirs = _pair("vit_b_16", 10, image_size=32)
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = ours(x, return_features=True)
        assert torch.equal(logits, theirs(x))
        tokens = theirs.encoder(torch.cat([theirs.class_token.expand(2, -1, -1),
                                           theirs._process_input(x)], dim=1))  # fmt: skip
    assert torch.equal(feats, tokens[:, 0])  # the class token, the input of heads.head
    assert ours.fixed_input_size() == 32 and input_size("torchvision:vit_b_16", image_size=32) == 32


def test_heads_of_the_families() -> None:
    def head(name: str) -> list[str]:
        with torch.device("meta"):
            net = models.get_model(name, weights=None, num_classes=10)
        return [type(m).__name__ for m in head_modules(net, name, 10)]

    assert head("resnet18") == ["Linear"]
    assert head("convnext_tiny") == ["Linear"]  # after its LayerNorm2d and Flatten
    assert head("efficientnet_b0") == ["Dropout", "Linear"]
    assert head("swin_t") == ["Linear"]
    with torch.device("meta"):
        assert create_model("torchvision:convnext_tiny", 10).feature_dim == 768
        assert create_model("torchvision:swin_t", 10).feature_dim == 768
    assert input_size("torchvision:inception_v3") == 299
    # RegNet's initialiser reads values, so it cannot be built on the meta device: built for real
    assert feature_dim("torchvision:regnet_x_400mf") == 400
    assert model_args_for("torchvision:regnet_x_400mf", {}, 32) == {}
    assert resolve_name("torchvision:ResNet18") == "torchvision:resnet18"


def test_errors_name_the_model_and_the_fix() -> None:
    with pytest.raises(UsageError) as exc:
        resolve_name("torchvision:resnet19")
    assert exc.value.message == (
        "unknown torchvision model 'torchvision:resnet19'. Did you mean: torchvision:resnet18, "
        "torchvision:resnet152, torchvision:resnet101? Run 'icckd models --family torchvision' "
        "to list them."
    )
    with pytest.raises(
        UsageError, match=r"^torchvision:fasterrcnn_resnet50_fpn is not an image classifier"
    ):
        resolve_name("torchvision:fasterrcnn_resnet50_fpn")
    with pytest.raises(UsageError) as exc:
        create_model("torchvision:squeezenet1_1", 10)
    assert exc.value.message == (
        "torchvision:squeezenet1_1 has no linear classification head with 10 outputs (e.g. "
        "SqueezeNet's is a convolution); icckd needs pooled features and a linear head: choose "
        "another model"
    )
    with pytest.raises(
        UsageError, match=r"^torchvision:vit_b_16 cannot be built with image_size=30 "
    ):
        with torch.device("meta"):
            create_model("torchvision:vit_b_16", 10, image_size=30)
    with pytest.raises(UsageError, match=r"^unknown model library 'tf' in 'tf:resnet'"):
        resolve_name("tf:resnet")
