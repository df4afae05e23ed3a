"""timm: models are timm's own: the same keys, the same logits, features timm's pre-logits."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from icckd_cli.base.errors import IcckdError, UsageError
from icckd_cli.models import (
    create_model,
    feature_dim,
    input_size,
    model_args_for,
    resolve_name,
    timm_adapter,
)
from icckd_cli.models.loading import load_state_strict

timm = pytest.importorskip("timm")

VIT = ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4})
CASES = [("resnet18", {}), VIT]


@pytest.mark.parametrize(("name", "args"), CASES, ids=["resnet18", "vit_tiny"])
def test_same_keys_features_and_logits_as_timm(name: str, args: dict) -> None:
    torch.manual_seed(0)
    ours = create_model(f"timm:{name}", 7, **args).eval()
    theirs = timm.create_model(name, num_classes=7, **args).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())  # no prefix, same order
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits, feats = ours(x, return_features=True)
        want = theirs(x)
        pre = theirs.forward_head(theirs.forward_features(x), pre_logits=True)
    assert torch.equal(logits, want)
    assert torch.equal(feats, pre)
    assert feats.shape == (3, ours.feature_dim) == (3, theirs.num_features)


def test_timm_state_dict_loads_strictly_into_ours() -> None:
    theirs = timm.create_model(VIT[0], num_classes=10, **VIT[1])
    ours = create_model(f"timm:{VIT[0]}", 10, **VIT[1])
    load_state_strict(ours, theirs.state_dict(), "timm")
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)


def test_the_wrapper_and_timm_share_one_set_of_tensors() -> None:
    model = create_model(f"timm:{VIT[0]}", 10, **VIT[1])
    model.to(torch.float64)  # the root's own parameters (cls_token) are replaced in the table
    assert model.net.cls_token.dtype == torch.float64 and model.cls_token is model.net.cls_token
    model.eval()
    assert not model.net.training and not model.blocks[0].training
    model.train()
    assert model.net.training
    twin = copy.deepcopy(model)
    assert twin.net.cls_token is twin.cls_token and twin.cls_token is not model.cls_token


def test_sizes_are_known_without_a_training_step() -> None:
    assert feature_dim(f"timm:{VIT[0]}", **VIT[1]) == 192
    assert feature_dim("timm:resnet18") == 512
    assert input_size(f"timm:{VIT[0]}", **VIT[1]) == 32
    assert input_size("timm:resnet18") == 224
    # the data set's image size goes to builders that take one, unless given
    assert model_args_for(f"timm:{VIT[0]}", {"patch_size": 4}, 32) == {
        "patch_size": 4,
        "img_size": 32,
    }
    assert model_args_for(f"timm:{VIT[0]}", {"img_size": 64}, 32) == {"img_size": 64}
    assert model_args_for("timm:resnet18", {}, 32) == {}
    assert resolve_name("TIMM:ResNet18") == "timm:resnet18"


def test_vit_reports_the_one_size_it_takes() -> None:
    assert create_model(f"timm:{VIT[0]}", 10, **VIT[1]).fixed_input_size() == 32
    dyn = create_model(f"timm:{VIT[0]}", 10, **VIT[1], dynamic_img_size=True)
    assert dyn.fixed_input_size() is None
    assert create_model("timm:resnet18", 10).fixed_input_size() is None


def test_missing_timm_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    timm_adapter.names.cache_clear()
    with pytest.raises(UsageError) as exc:
        create_model("timm:resnet18", 10)
    assert exc.value.message == (
        "timm:resnet18 needs the timm package; install it with pip install -e '.[timm]'"
    )
    timm_adapter.names.cache_clear()


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(UsageError) as exc:
        resolve_name("timm:vit_tiny_patch16_225")
    assert exc.value.message.startswith(
        "unknown timm model 'timm:vit_tiny_patch16_225'. Did you mean: "
    )
    assert "timm:vit_tiny_patch16_224" in exc.value.message
    assert exc.value.message.endswith("Run 'icckd models --family timm' to list them.")


def test_models_it_cannot_split_and_arguments_it_rejects() -> None:
    with pytest.raises(
        UsageError, match=r"^timm:deit_tiny_distilled_patch16_224 has two classification heads"
    ):
        create_model("timm:deit_tiny_distilled_patch16_224", 10, img_size=32, patch_size=4)
    with pytest.raises(UsageError) as exc:
        create_model("timm:resnet18", 10, frobnicate=1)
    assert exc.value.message == (
        "timm:resnet18 cannot be built with frobnicate=1 (ResNet.__init__() got an unexpected "
        "keyword argument 'frobnicate'); fix or drop the --model-arg (see the library's "
        "documentation of the builder's arguments)"
    )


def test_weights_of_another_shape_name_the_builder_arguments() -> None:
    theirs = timm.create_model(VIT[0], num_classes=10, img_size=32, patch_size=8)
    ours = create_model(f"timm:{VIT[0]}", 10, **VIT[1])
    with pytest.raises(IcckdError) as exc:
        load_state_strict(ours, theirs.state_dict(), "vit.pth")
    assert exc.value.message == (
        "vit.pth does not fit a timm:vit_tiny_patch16_224 with 10 classes: 0 missing keys, 0 "
        "unexpected, 2 of another shape (e.g. pos_embed: (1, 17, 192) in the file, (1, 65, 192) "
        "here); check the architecture and the number of classes and the builder arguments the "
        "weights were made with (--model-arg, or --teacher-model-arg for a teacher, e.g. "
        "img_size=32)"
    )


def test_a_vit_with_a_patch_grid_under_4x4_is_warned_about_naming_patch_size() -> None:
    from icckd_cli.commands.evaluation import patch_grid_warning
    from icckd_cli.models.registry import probe_model

    small = {"embed_dim": 32, "depth": 1, "num_heads": 2, "img_size": 32}
    vit = probe_model("timm:vit_tiny_patch16_224", 10, **small)  # 16-pixel patches
    assert vit.patch_grid(32) == (2, 2)
    assert patch_grid_warning(vit, 32) == (
        "timm:vit_tiny_patch16_224 cuts the 32x32 images into a 2x2 grid of patches (4 "
        "tokens), too few to learn from; pass --model-arg patch_size=4 for an 8x8 grid"
    )
    fine = probe_model("timm:vit_tiny_patch16_224", 10, **small, patch_size=8)
    assert fine.patch_grid(32) == (4, 4) and patch_grid_warning(fine, 32) is None
    cnn = probe_model("timm:resnet18", 10)
    assert cnn.patch_grid(32) is None and patch_grid_warning(cnn, 32) is None
    assert patch_grid_warning(create_model("resnet8", 10), 32) is None
    tv = probe_model("torchvision:vit_b_16", 10, image_size=32)  # its builder fixes patches
    assert tv.patch_grid(32) == (2, 2)
    assert "use a timm: ViT with --model-arg patch_size=4" in str(patch_grid_warning(tv, 32))


def test_training_a_vit_on_a_2x2_grid_prints_the_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tests.helpers import icckd

    small = ["--model-arg", "embed_dim=16", "--model-arg", "depth=1", "--model-arg", "num_heads=1"]
    r = icckd(capsys, "train-teacher", "--arch", "timm:vit_tiny_patch16_224", *small,
              "--dataset", "digits", "--epochs", "1", "--train-per-class", "2",
              "--test-per-class", "1", "--icc-weight", "0", "--device", "cpu",
              "--out", tmp_path / "vit")  # fmt: skip
    assert r.code == 0, r.err
    assert r.err.count("grid of patches") == 1
    assert "warning: timm:vit_tiny_patch16_224 cuts the 32x32 images into a 2x2 grid" in r.err
