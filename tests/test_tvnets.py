"""The torchvision-built ImageNet networks: torchvision's state dicts load strictly and the
logits agree; the zoo lists every name with its input size, none differing only in case."""

from __future__ import annotations

import pytest
import torch
import torchvision

from icckd_cli.models import create_model, input_size, list_models
from icckd_cli.models.registry import register
from icckd_cli.models.tvnets import TvResNet

BUILDERS = {
    "tv_resnet18": torchvision.models.resnet18,
    "tv_resnet34": torchvision.models.resnet34,
    "tv_resnet50": torchvision.models.resnet50,
    "tv_mobilenet_v2": torchvision.models.mobilenet_v2,
}


def test_every_tv_model_is_covered() -> None:
    assert sorted(n for n in list_models() if n.startswith("tv_")) == sorted(BUILDERS)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_torchvision_state_dict_loads_strictly_and_logits_agree(name: str) -> None:
    torch.manual_seed(0)
    reference = BUILDERS[name](weights=None, num_classes=7).eval()
    with torch.no_grad():  # BN statistics away from 0/1, so the buffers are really compared
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = create_model(name, 7).eval()
    result = ours.load_state_dict(reference.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert list(ours.state_dict()) == list(reference.state_dict())  # same keys, same order
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        logits, feats = ours(x, return_features=True)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert feats.shape == (2, ours.feature_dim)
    torch.testing.assert_close(ours.forward_head(feats), expected, rtol=0, atol=1e-5)


def test_input_sizes() -> None:
    assert input_size("tv_resnet18") == input_size("MobileNetV1") == 224
    assert input_size("resnet56") == input_size("ResNet50") == 32


def test_no_two_names_differ_only_in_case() -> None:
    names = list_models()
    assert len({n.lower() for n in names}) == len(names)
    with pytest.raises(ValueError, match="registered twice \\(as 'ResNet50'\\)"):
        register("resnet50", 2048, TvResNet)
    assert "resnet50" not in list_models()
