"""fetch-teacher timm:NAME[.TAG]: from a file or a (here: fake) Hugging Face cache, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from icckd_cli.base.checkpoint import read_metadata
from icckd_cli.commands.published.timm import hf_cache_dir, hf_cached_file
from icckd_cli.models.loading import load_any_model
from tests.helpers import icckd, ok

timm = pytest.importorskip("timm")
Capsys = pytest.CaptureFixture[str]


def fake_cache(root: Path, repo: str, state: dict[str, torch.Tensor], name: str) -> Path:
    """huggingface_hub's layout: refs/main names the snapshot, whose file links to a blob."""
    folder = root / "hub" / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123abcd")
    (folder / "blobs").mkdir()
    snap = folder / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    blob = folder / "blobs" / "9f86d081"
    if name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(blob))
    else:
        torch.save(state, blob)
    os.symlink("../../blobs/9f86d081", snap / name)
    return snap / name


def test_cache_location_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", "/x/hub-cache")
    monkeypatch.setenv("HF_HOME", "/y")
    assert hf_cache_dir() == Path("/x/hub-cache")
    monkeypatch.delenv("HF_HUB_CACHE")
    assert hf_cache_dir() == Path("/y/hub")
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", "/z")
    assert hf_cache_dir() == Path("/z/huggingface/hub")


@pytest.mark.parametrize("file", ["model.safetensors", "pytorch_model.bin"])
def test_resnet_from_the_hugging_face_cache(
    capsys: Capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=1000)
    path = fake_cache(tmp_path / "hf", "timm/resnet18.a1_in1k", net.state_dict(), file)
    assert hf_cached_file("timm/resnet18.a1_in1k") == path
    out = tmp_path / "r18.safetensors"
    r = ok(capsys, "fetch-teacher", "timm:resnet18.a1_in1k", "--out", out, "--format", "json")
    assert r.json()["arch"] == "timm:resnet18" and r.json()["url"] == str(path)
    meta = read_metadata(out)
    assert meta["model_args"] == {} and meta["source"]["tag"] == "a1_in1k"
    assert meta["dataset"]["classes"][0] == "tench" and meta["dataset"]["num_classes"] == 1000
    model, _ = load_any_model(out)
    for key, value in net.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    assert path.is_file()  # the cache is read, never changed


def test_vit_from_a_file_records_its_size(capsys: Capsys, tmp_path: Path) -> None:
    net = timm.create_model("vit_tiny_patch16_224", num_classes=1000)
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors")
    )
    out = tmp_path / "vit.safetensors"
    ok(capsys, "fetch-teacher", "timm:vit_tiny_patch16_224", "--from", tmp_path / "w.safetensors",
       "--out", out, "--no-eval")  # fmt: skip
    meta = read_metadata(out)
    assert meta["arch"] == "timm:vit_tiny_patch16_224" and meta["model_args"] == {"img_size": 224}
    assert meta["source"]["hf_hub_id"] == "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert meta["dataset"]["image_size"] == 224 and meta["dataset"]["mean"] == [0.5, 0.5, 0.5]


def test_not_in_the_cache_says_how_to_get_it(
    capsys: Capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    r = icckd(capsys, "fetch-teacher", "timm:resnet18.a2_in1k", "--out", tmp_path / "x.safetensors")
    assert r.code == 1 and not (tmp_path / "x.safetensors").exists()
    assert r.err.strip() == (
        f"error: timm:resnet18.a2_in1k is not in the Hugging Face cache ({tmp_path}/empty/"
        "models--timm--resnet18.a2_in1k holds no model.safetensors or pytorch_model.bin); fetch "
        "it once where there is a network (e.g. timm.create_model('resnet18.a2_in1k', "
        "pretrained=True)) and run again, or pass the file with --from FILE"
    )
    r = icckd(capsys, "fetch-teacher", "timm:resnet18.nope", "--out", tmp_path / "x.safetensors")
    assert r.code == 2 and r.err.startswith(
        "error: timm has no published weights 'timm:resnet18.nope'; choose one of: "
        "timm:resnet18.a1_in1k,"
    )
