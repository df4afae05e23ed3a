"""What a model costs: MACs counted by hand and against torchvision, stored size, latency."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from icckd_cli.base.checkpoint import save_model
from icckd_cli.base.units import si
from icckd_cli.commands.cost import (
    REPS,
    THROUGHPUT_BATCH,
    WARMUP,
    count_macs,
    count_params,
    measure_latency,
    stored_bytes,
)
from icckd_cli.data import load_dataset
from icckd_cli.models import create_model
from tests.helpers import digits_teacher, icckd


def test_macs_of_a_small_conv_net_counted_by_hand() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )  # fmt: skip
    # conv: 8 output channels x 8 x 8 positions x (3 input channels x 3 x 3 kernel) = 13,824
    # linear: 512 inputs x 10 outputs = 5,120; batch norm, ReLU and the biases count nothing
    assert count_macs(net, 8) == 8 * 8 * 8 * (3 * 3 * 3) + 512 * 10 == 18_944
    # 16x16: four times the conv's positions; the linear layer would not fit, so conv alone
    assert count_macs(net[:3], 16) == 4 * 8 * 8 * 8 * 27
    assert count_params(net) == (8 * 27 + 8) + (8 + 8) + (512 * 10 + 10)


class _Attention(nn.Module):
    """The image's 3 channels as 3 tokens of S*S features attending to each other."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 3, S, S) -> (1, 1, 3, S*S)."""
        tokens = x.flatten(2)[:, None]  # (batch 1, 1 head, 3 tokens, S*S features)
        return nn.functional.scaled_dot_product_attention(tokens, tokens, tokens)


def test_attention_is_counted_on_the_cpu_too() -> None:
    # QK^T: 3 x 3 scores of S*S-long dot products; AV: 3 x S*S outputs of 3-long sums
    assert count_macs(_Attention(), 4) == 3 * 3 * 16 + 3 * 16 * 3 == 288


@pytest.mark.slow  # importing timm and building the ViT: about 5 s here
def test_macs_of_a_vit_counted_by_hand() -> None:
    pytest.importorskip("timm")
    vit = create_model("timm:vit_tiny_patch16_224", 10, img_size=32, patch_size=4)
    n, d = 8 * 8 + 1, 192  # 64 patches of 4x4 and the class token, width 192
    patches = 64 * d * (3 * 4 * 4)  # the patch embedding, a 4x4 stride-4 convolution
    block = n * d * 3 * d + n * d * d + 2 * n * d * 4 * d  # qkv, projection, MLP (4 x wide)
    block += 2 * n * n * d  # attention: QK^T and AV over the 3 heads of 64
    assert count_macs(vit, 32) == patches + 12 * block + d * 10 == 365_107_584


@pytest.mark.parametrize(
    ("arch", "weights"),
    [
        ("tv_resnet18", "ResNet18_Weights"),
        ("tv_resnet50", "ResNet50_Weights"),
        ("tv_mobilenet_v2", "MobileNet_V2_Weights"),
    ],
)
def test_torchvision_params_exact_and_macs_within_2_percent(arch: str, weights: str) -> None:
    from torchvision import models

    meta = getattr(models, weights).IMAGENET1K_V1.meta  # no download: the enum's own figures
    with torch.device("meta"):  # shapes alone: the count needs no memory and no init
        model = create_model(arch, 1000)
    assert count_params(model) == meta["num_params"]
    gmacs = count_macs(model, 224) / 1e9
    # torchvision's "_ops" are GFLOPS that count multiply-accumulates, rounded to 3 decimals
    assert abs(gmacs - meta["_ops"]) <= 0.02 * meta["_ops"]
    assert round(gmacs, 3) == meta["_ops"]  # in fact they agree to the published digits


def test_stored_size_is_the_tensor_bytes_of_the_file(tmp_path: Path) -> None:
    model = digits_teacher(tmp_path / "t.safetensors")
    want = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert stored_bytes(tmp_path / "t.safetensors") == want
    raw = (tmp_path / "t.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    assert want == len(raw) - 8 - header_len  # everything but the header is tensor data


def test_latency_is_a_median_with_what_it_was_measured_on() -> None:
    model = create_model("resnet8", 10)
    got = measure_latency(model, 16, torch.device("cpu"), batch_size=4, reps=5)
    assert got["latency_ms"] > 0 and got["throughput"] > 0
    t = got["timing"]
    assert t["device"] == "cpu" and t["threads"] == torch.get_num_threads()
    assert t["dtype"] == "float32" and t["memory_format"] == "contiguous"
    assert t["batch_size"] == 4 and t["reps"] == {"latency": 5, "throughput": 5}
    assert model.training  # the mode is given back
    alone = measure_latency(model, 16, torch.device("cpu"), channels_last=True, reps=5)
    assert alone["throughput"] is None and alone["timing"]["memory_format"] == "channels_last"


def test_each_timed_pass_is_reported_and_the_last_report_is_complete() -> None:
    events: list[tuple[str, dict]] = []
    model = create_model("resnet8", 10)
    got = measure_latency(model, 16, torch.device("cpu"), batch_size=4, reps=5,
                          progress=lambda event, info: events.append((event, info)))  # fmt: skip
    assert {e for e, _ in events} == {"latency"}
    for batch in (1, 4):
        done = [(i["done"], i["total"]) for _, i in events if i["batch"] == batch]
        n = got["timing"]["reps"]["latency" if batch == 1 else "throughput"]
        assert [d for d, _ in done] == list(range(1, WARMUP + n + 1))  # one per pass
        assert done[-1] == (WARMUP + n, WARMUP + n)  # the end, wherever the budget stopped it
        assert all(t == WARMUP + 5 for _, t in done[:-1])
    assert [i["batch"] for _, i in events] == sorted(i["batch"] for _, i in events)


def test_si_prefixes() -> None:
    assert si(1_814_073_344) == "1.81 G" and si(12_501_632) == "12.50 M"
    assert si(272_474) == "272.5 k" and si(999) == "999"


def _eval_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> dict:
    r = icckd(capsys, "eval", *map(str, argv), "--device", "cpu", "--format", "json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_eval_reports_cost_and_latency(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model = digits_teacher(tmp_path / "t.safetensors", {"test_per_class": 2})
    got = _eval_json(capsys, tmp_path / "t.safetensors")
    assert got["params"] == count_params(model) and got["image_size"] == 32
    assert got["macs"] == count_macs(model, 32)
    assert got["size_mb"] == stored_bytes(tmp_path / "t.safetensors") / 1e6
    assert (got["latency_ms"], got["throughput"], got["timing"]) == (None, None, None)
    timed = _eval_json(capsys, tmp_path / "t.safetensors", "--latency", "--batch-size", "8")
    assert timed["top1"] == got["top1"] and timed["latency_ms"] > 0 and timed["throughput"] > 0
    assert timed["timing"]["batch_size"] == 8 and timed["timing"]["reps"]["latency"] <= REPS
    assert timed["timing"]["memory_format"] == "channels_last"  # the layout it trained in
    r = icckd(capsys, "eval", tmp_path / "t.safetensors", "--device", "cpu", "--latency",
              "--batch-size", "8")  # fmt: skip
    assert r.code == 0 and "ms (batch 1; cpu," in r.out and "images/s (batch 8;" in r.out
    # without --batch-size the throughput batch is 64, not the evaluation's 512, and each
    # timing says that it started
    r = icckd(capsys, "eval", tmp_path / "t.safetensors", "--device", "cpu", "--latency",
              "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    assert THROUGHPUT_BATCH == 64 and json.loads(r.out)["timing"]["batch_size"] == 64
    assert r.err.splitlines() == [
        f"timing batch-1 latency (at most {WARMUP + REPS} passes)",
        f"timing throughput at batch 64 (at most {WARMUP + REPS} passes)",
    ]


def test_cost_only_needs_no_data_set(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = load_dataset("digits", train_per_class=2, test_per_class=1).spec.to_dict()
    absent = {**spec, "name": "imagefolder", "data_dir": str(tmp_path / "gone")}
    model = create_model("resnet8", 10)
    meta = {"kind": "student", "arch": "resnet8", "num_classes": 10, "dataset": absent}
    save_model(tmp_path / "s.safetensors", model, {**meta, "config": {}})
    r = icckd(capsys, "eval", tmp_path / "s.safetensors", "--device", "cpu")
    assert r.code == 2 and "does not exist; check --data-dir" in r.err  # the data are needed
    got = _eval_json(capsys, tmp_path / "s.safetensors", "--cost-only", "--latency",
                     "--batch-size", "8")  # fmt: skip
    assert "top1" not in got and got["dataset"] == "imagefolder" and got["split"] is None
    assert got["params"] == count_params(model) and got["macs"] == count_macs(model, 32)
    assert got["latency_ms"] > 0 and got["throughput"] > 0
    r = icckd(capsys, "eval", tmp_path / "s.safetensors", "--device", "cpu", "--cost-only")
    assert r.code == 0 and "top-1" not in r.out and "12.50 M" in r.out
