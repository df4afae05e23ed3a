"""The recipes: which one a run gets and why, DeiT's scaling, explicit values, the optimiser."""

from __future__ import annotations

import fnmatch
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from icckd_cli.commands.inputs import resolved_config
from icckd_cli.models import create_model
from icckd_cli.presentation.lines import recipe_line
from icckd_cli.settings import recipes
from icckd_cli.settings.config import DistillConfig, TrainTeacherConfig, build
from icckd_cli.settings.recipes import TRANSFORMERS, choose, is_transformer, make_optimizer, summary
from tests.helpers import TINY, ok

VIT = "timm:vit_tiny_patch16_224"


@pytest.mark.parametrize(
    "arch",
    [VIT, "TIMM:DeiT_tiny_patch16_224", "timm:deit3_small_patch16_224",
     "timm:swinv2_tiny_window8_256",
     "timm:vit_small_patch16_224.augreg_in21k", "timm:eva02_tiny_patch14_224", "timm:levit_128",
     "timm:cait_xxs24_224", "timm:beitv2_base_patch16_224", "timm:xcit_nano_12_p16_224",
     "timm:pvt_v2_b0", "torchvision:vit_b_16", "torchvision:swin_v2_t", "torchvision:maxvit_t"],
)  # fmt: skip
def test_vision_transformers_are_recognised(arch: str) -> None:
    assert is_transformer(arch)


@pytest.mark.parametrize(
    "arch",
    ["resnet8", "vit_b_16", "timm:resnet18", "timm:convnext_tiny", "timm:mixer_b16_224",
     "timm:efficientnet_b0", "torchvision:resnet18", "torchvision:efficientnet_b0",
     "torchvision:convnext_tiny", "other:vit_b_16"],
)  # fmt: skip
def test_cnns_and_zoo_names_are_not(arch: str) -> None:
    assert not is_transformer(arch)


@pytest.mark.slow  # importing timm and listing its models: several seconds
def test_every_pattern_names_real_models() -> None:
    """A misspelt pattern would silently give its family the CNN recipe."""
    timm = pytest.importorskip("timm")
    import torchvision

    known = {
        "timm": timm.list_models(),
        "torchvision": torchvision.models.list_models(module=torchvision.models),
    }
    for library, patterns in TRANSFORMERS.items():
        for pattern in patterns:
            assert fnmatch.filter(known[library], pattern), (library, pattern)


def test_the_recipe_follows_architecture_data_set_and_optimiser() -> None:
    cases = {
        ("resnet8", "digits", None): ("CRD", "resnet8 is a CNN on digits"),
        ("tv_resnet18", "imagenet", None): ("ImageNet", "tv_resnet18 is a CNN on imagenet"),
        (VIT, "cifar100", None): ("DeiT", f"{VIT} is a vision Transformer"),
        (VIT, "imagenet", "adamw"): ("DeiT", f"{VIT} is a vision Transformer"),
        (VIT, "cifar10", "sgd"): ("CRD", "--optimizer sgd given"),
        (VIT, "imagenet", "sgd"): ("ImageNet", "--optimizer sgd given"),
        ("resnet8", "digits", "adamw"): ("DeiT", "--optimizer adamw given"),
        ("resnet8", "digits", "sgd"): ("CRD", "resnet8 is a CNN on digits"),
    }
    for (arch, dataset, optimizer), (name, reason) in cases.items():
        choice = choose(arch, dataset, optimizer)
        assert (choice.recipe.name, choice.reason) == (name, reason)


def test_a_transformer_gets_the_deit_recipe_scaled_by_hand() -> None:
    """DeiT: AdamW, lr 5e-4 x batch/512, wd 0.05, cosine, 5 warm-up epochs of 300."""
    cfg = build(TrainTeacherConfig, {"arch": VIT, "epochs": 300})
    assert (cfg.optimizer, cfg.schedule, cfg.weight_decay) == ("adamw", "cosine", 0.05)
    assert cfg.resolved_lr(VIT) == 5e-4 * 64 / 512 == 6.25e-5
    assert cfg.resolved_lr(VIT, world=16) == 1e-3  # the paper's global batch of 1024
    assert cfg.resolved_decay() == []
    assert cfg.recipe(VIT).recipe.name == "DeiT"
    # 5/300 of the run, rounded, at least 1 and at most the run
    for epochs, warmup in [(300, 5), (240, 4), (100, 2), (60, 1), (10, 1), (1, 1)]:
        assert build(TrainTeacherConfig, {"arch": VIT, "epochs": epochs}).resolved_warmup(VIT) == (
            warmup
        )
    # the CNN recipes do not warm up, and keep their values
    cnn = build(TrainTeacherConfig, {"arch": "resnet8", "epochs": 10})
    assert (cnn.optimizer, cnn.schedule, cnn.weight_decay, cnn.resolved_warmup("resnet8")) == (
        "sgd", "step", 5e-4, 0
    )  # fmt: skip
    assert cnn.resolved_lr("resnet8") == 0.05 and cnn.resolved_decay() == [6, 8, 9]


def test_a_distilled_student_takes_its_own_architectures_recipe() -> None:
    vit = build(DistillConfig, {"arch": VIT, "teacher_arch": "resnet56"})
    assert (vit.optimizer, vit.schedule, vit.weight_decay) == ("adamw", "cosine", 0.05)
    cnn = build(DistillConfig, {"arch": "resnet8", "teacher_arch": VIT})
    assert (cnn.optimizer, cnn.schedule, cnn.weight_decay) == ("sgd", "step", 5e-4)
    # on imagenet the data set keeps its length, batch and KD weights; DeiT sets the optimiser
    net = build(DistillConfig, {"arch": VIT, "dataset": "imagenet"})
    assert (net.epochs, net.batch_size, net.ce_weight, net.kd_temperature) == (100, 256, 0.5, 1.0)
    assert (net.weight_decay, net.resolved_lr(VIT), net.resolved_warmup(VIT)) == (0.05, 2.5e-4, 2)


def test_explicit_values_win_over_the_recipe(tmp_path: Path) -> None:
    given = {"arch": VIT, "epochs": 10, "lr": 1e-3, "weight_decay": 0.1, "warmup_epochs": 0}
    cfg = build(TrainTeacherConfig, {**given, "schedule": "step"})
    assert (cfg.optimizer, cfg.resolved_lr(VIT), cfg.weight_decay) == ("adamw", 1e-3, 0.1)
    assert (cfg.schedule, cfg.resolved_warmup(VIT), cfg.resolved_decay()) == ("step", 0, [6, 8, 9])
    # decay epochs given without a schedule mean the step schedule
    stepped = build(TrainTeacherConfig, {"arch": VIT, "epochs": 10, "lr_decay_epochs": [5]})
    assert (stepped.optimizer, stepped.schedule, stepped.resolved_decay()) == ("adamw", "step", [5])
    # SGD on a Transformer is the data set's SGD recipe, whole
    sgd = build(TrainTeacherConfig, {"arch": VIT, "epochs": 10, "optimizer": "sgd"})
    assert (sgd.schedule, sgd.weight_decay, sgd.resolved_lr(VIT)) == ("step", 5e-4, 0.05)
    assert sgd.resolved_warmup(VIT) == 0
    # a config file takes the same names, the command line still wins
    toml = tmp_path / "run.toml"
    toml.write_text('optimizer = "adamw"\nschedule = "step"\nwarmup_epochs = 2\n')
    cnn = build(TrainTeacherConfig, {"arch": "resnet8", "epochs": 10, "warmup_epochs": 3}, toml)
    assert (cnn.optimizer, cnn.schedule, cnn.resolved_warmup("resnet8")) == ("adamw", "step", 3)
    assert (cnn.weight_decay, cnn.resolved_lr("resnet8")) == (0.05, 5e-4 * 64 / 512)


def test_adamw_as_deit_leaves_biases_and_norms_undecayed() -> None:
    model = create_model("resnet8", 10)
    head = nn.Linear(4, 2)
    opt = make_optimizer([model, head], "adamw", 1e-3, 0.05, 0.9)
    assert isinstance(opt, torch.optim.AdamW)
    decayed, undecayed = opt.param_groups
    assert (decayed["weight_decay"], undecayed["weight_decay"]) == (0.05, 0.0)
    assert decayed["betas"] == (0.9, 0.999) and decayed["eps"] == 1e-8 and decayed["lr"] == 1e-3
    params = [*model.parameters(), *head.parameters()]
    assert len(decayed["params"]) + len(undecayed["params"]) == len(params)
    assert all(p.ndim > 1 for p in decayed["params"]) and _holds(decayed, head.weight)
    assert all(p.ndim == 1 for p in undecayed["params"]) and _holds(undecayed, head.bias)

    class Tokens(nn.Module):
        """A Transformer's position embedding (3-D) listed in no_weight_decay(), as timm does."""

        def __init__(self) -> None:
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
            self.proj = nn.Linear(8, 8)

        def no_weight_decay(self) -> set[str]:
            return {"pos_embed"}

    wrapped = nn.Sequential(Tokens())  # the names are found below a wrapper too
    opt = make_optimizer([wrapped], "adamw", 1e-3, 0.05, 0.9)
    tokens = wrapped[0]
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(tokens.proj.weight)]
    assert _holds(opt.param_groups[1], tokens.pos_embed)


def _holds(group: dict, param: torch.Tensor) -> bool:
    return any(p is param for p in group["params"])


def test_sgd_decays_every_parameter_as_before() -> None:
    model = create_model("resnet8", 10)
    opt = make_optimizer([model], "sgd", 0.05, 5e-4, 0.9)
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.9, 5e-4)
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]


# ----------------------------------------------------------------------------- in a run


def test_the_first_line_names_the_recipe_and_why() -> None:
    cnn = resolved_config(build(TrainTeacherConfig, {"arch": "resnet8", "dataset": "digits"}))
    assert cnn["recipe"] == "CRD"
    assert recipe_line(summary(cnn)) == (
        "recipe: CRD (resnet8 is a CNN on digits): SGD lr 0.05, momentum 0.9, wd 5e-4, "
        "x0.1 at epochs 150,180,210"
    )
    given = build(DistillConfig, {"arch": "mobilenetv2", "epochs": 2, "warmup_epochs": 2})
    assert recipe_line(summary(resolved_config(given), lr_given=True)) == (
        "recipe: CRD (MobileNetV2 is a CNN on cifar100): SGD lr 0.01, momentum 0.9, wd 5e-4, "
        "x0.1 at epoch 1, 2 warm-up epochs"
    )
    net = {**cnn, "arch": "tv_resnet18", "dataset": "imagenet", "lr": 0.2, "weight_decay": 1e-4}
    assert recipe_line(summary({**net, "batch_size": 256, "lr_decay_epochs": []}, world=2)) == (
        "recipe: ImageNet (tv_resnet18 is a CNN on imagenet): SGD lr 0.2 (0.1 x 512/256), "
        "momentum 0.9, wd 1e-4, no decay"
    )


def test_a_run_says_which_recipe_and_records_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A zoo CNN stands in for a Transformer, so a model can be built without timm."""
    run = [*TINY, "--train-per-class", "3", "--epochs", "2"]
    monkeypatch.setattr(recipes, "is_transformer", lambda arch: arch == "resnet8")
    out = tmp_path / "vit"
    r = ok(capsys, "train-teacher", "--arch", "resnet8", *run, "--out", out)
    assert r.err.splitlines()[0] == (
        "recipe: DeiT (resnet8 is a vision Transformer): AdamW lr 1.5625e-05 (5e-4 x 16/512), "
        "wd 0.05, cosine, 1 warm-up epoch"
    )
    assert r.err.splitlines()[1].startswith("epoch   1/2")
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in ("recipe", "optimizer", "schedule", "warmup_epochs")} == {
        "recipe": "DeiT", "optimizer": "adamw", "schedule": "cosine", "warmup_epochs": 1
    }  # fmt: skip
    assert (config["lr"], config["weight_decay"], config["lr_decay_epochs"]) == (
        1.5625e-05, 0.05, []
    )  # fmt: skip
    from icckd_cli.base.checkpoint import read_metadata

    assert read_metadata(out / "model.safetensors")["config"]["recipe"] == "DeiT"
    # 30 images, batch 16: 2 steps an epoch, each epoch logs its last: the warm-up's second
    # step of 2 (the peak), then the cosine's second step of 2 (half way down)
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lrs == [1.5625e-05, 1.5625e-05 * 0.5 * (1 + math.cos(math.pi / 2))]


def test_json_output_carries_the_recipe(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = [*TINY, "--train-per-class", "2", "--epochs", "1", "--format", "json"]
    r = ok(capsys, "train-teacher", "--arch", "resnet8", *run, "--out", tmp_path / "r")
    recipe = r.json()["recipe"]  # stdout is the JSON alone, the line is on stderr
    assert r.err.splitlines()[0] == recipe_line(recipe)
    assert (recipe["name"], recipe["reason"], recipe["lr"]) == (
        "CRD", "resnet8 is a CNN on digits", 0.05
    )  # fmt: skip
    assert recipe_line(recipe) == (
        "recipe: CRD (resnet8 is a CNN on digits): SGD lr 0.05, momentum 0.9, wd 5e-4, no decay"
    )
