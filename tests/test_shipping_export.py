"""`icckd export`: round trips through each runtime, the parity check, and its bad inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from icckd_cli.base.checkpoint import read_metadata, save_model
from icckd_cli.commands.shipping import export as ex
from icckd_cli.commands.shipping import formats
from icckd_cli.data import load_dataset
from icckd_cli.models import ZooModel, create_model
from icckd_cli.models import registry as model_registry
from tests.helpers import digits_teacher, icckd

VIT = "timm:vit_tiny_patch16_224"
VIT_ARGS = {"img_size": 32, "patch_size": 4}
SLOW = pytest.mark.slow  # torch.export takes 2 to 10 s a model here; so does ONNX for ResNet-18
CASES = [
    ("resnet8", "onnx"), ("resnet8", "torchscript"),
    pytest.param("resnet8", "exported", marks=SLOW),
    pytest.param("tv_resnet18", "onnx", marks=SLOW), ("tv_resnet18", "torchscript"),
    pytest.param("tv_resnet18", "exported", marks=SLOW),
    # a ViT through timm (img_size 32, patch_size 4): 10 s or more a format here
    pytest.param(VIT, "onnx", marks=SLOW), pytest.param(VIT, "torchscript", marks=SLOW),
    pytest.param(VIT, "exported", marks=SLOW),
]  # fmt: skip


def _digits_checkpoint(path: Path, arch: str) -> ZooModel:
    """An untrained `arch` on digits (32x32, 10 classes), saved with icckd metadata."""
    if arch == "resnet8":
        return digits_teacher(path)
    spec = load_dataset("digits", train_per_class=3, test_per_class=2).spec
    args = VIT_ARGS if arch == VIT else {}
    torch.manual_seed(0)
    model = create_model(arch, 10, **args)
    meta = {"kind": "teacher", "arch": arch, "num_classes": 10, "dataset": spec.to_dict()}
    save_model(path, model, {**meta, "config": {}, "model_args": args})
    return model


def _load(fmt: str, path: Path) -> Any:
    """The exported file through its own runtime, as a user would load it: x -> logits."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    if fmt == "torchscript":
        return torch.jit.load(str(path))
    return torch.export.load(str(path)).module()


def _digit_images(n: int, checkpoint: Path) -> tuple[Tensor, Tensor]:
    """(n, 3, 32, 32) digits test images as the export takes them (0..1), and as icckd's
    evaluation feeds the checkpoint: normalised with the statistics it records."""
    recorded = read_metadata(checkpoint)["dataset"]
    data = load_dataset("digits", test_per_class=1)
    raw = data.test.images[:n].float() / 255
    mean = torch.tensor(recorded["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(recorded["std"]).view(1, 3, 1, 1)
    return raw, (raw - mean) / std


@pytest.mark.parametrize(("arch", "fmt"), CASES)
def test_export_round_trip_matches_the_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, arch: str, fmt: str
) -> None:
    if arch == VIT:
        pytest.importorskip("timm")  # the optional [timm] extra (the test extra has it)
    model = _digits_checkpoint(tmp_path / "m.safetensors", arch).eval()
    out = tmp_path / f"m.{fmt}"
    r = icckd(capsys, "export", tmp_path / "m.safetensors", "--to", fmt, "--out", out,
              "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    told = json.loads(r.out)
    parity = told["parity"]
    assert parity["inputs"] == "32 digits test images" and parity["images"] == 32
    # all 32 agree because the logits do (max_abs_diff): these untrained models' best two
    # logits differ by 2.9e-3 or more on the parity images, 40 times the tolerance, so no
    # argmax can flip within it, whatever order a runtime sums in
    assert parity["top1_agree"] == 32 and parity["max_abs_diff"] <= 1e-4 * parity["logit_scale"]
    side = json.loads((tmp_path / f"m.{fmt}.json").read_text())
    assert side["classes"] == [str(k) for k in range(10)] and side["format"] == fmt
    assert side["input"]["shape"] == ["batch", 3, 32, 32] and side["input"]["range"] == [0, 1]
    recorded = read_metadata(tmp_path / "m.safetensors")["dataset"]
    assert (side["preprocessing"]["mean"], side["preprocessing"]["std"]) == (
        recorded["mean"],
        recorded["std"],
    )
    assert side["parity"] == parity and told["out"] == str(out)
    # checked here again, independently: 5 images in 0..1 (a batch size the export never
    # saw) against the checkpoint fed the data set's own normalisation
    raw, normalised = _digit_images(5, tmp_path / "m.safetensors")
    with torch.inference_mode():
        want = model(normalised)
    got = _load(fmt, out)(raw)
    assert got.shape == (5, 10) and torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert not list(tmp_path.glob(".m.*"))  # no temporary file left behind


def test_a_channels_last_checkpoint_exports_in_the_standard_layout(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = digits_teacher(tmp_path / "t.safetensors", {"channels_last": True})
    r = icckd(capsys, "export", tmp_path / "t.safetensors", "--to", "torchscript",
              "--out", tmp_path / "t.pt")  # fmt: skip
    assert r.code == 0, r.err
    assert "32 digits test images" in r.out and "32 of 32" in r.out
    traced = torch.jit.load(str(tmp_path / "t.pt"))
    raw, normalised = _digit_images(3, tmp_path / "t.safetensors")
    assert torch.allclose(traced(raw.contiguous()), model.eval()(normalised), atol=1e-5)


def test_without_the_data_set_parity_runs_on_random_inputs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = load_dataset("digits", test_per_class=1).spec.to_dict()
    gone = {**spec, "name": "imagefolder", "data_dir": str(tmp_path / "gone")}
    meta = {"kind": "teacher", "arch": "resnet8", "num_classes": 10, "dataset": gone}
    save_model(tmp_path / "t.safetensors", create_model("resnet8", 10), {**meta, "config": {}})
    r = icckd(capsys, "export", tmp_path / "t.safetensors", "--to", "onnx",
              "--out", tmp_path / "t.onnx", "--parity-images", "4", "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    assert json.loads(r.out)["parity"]["inputs"] == "4 random inputs (no imagefolder images here)"


# ----------------------------------------------------------------------------- bad inputs


def test_an_existing_file_needs_overwrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    digits_teacher(tmp_path / "t.safetensors")
    (tmp_path / "t.onnx").write_text("mine")
    r = icckd(capsys, "export", tmp_path / "t.safetensors", "--to", "onnx",
              "--out", tmp_path / "t.onnx")  # fmt: skip
    assert r.code == 2
    assert r.err.strip() == (
        f"error: {tmp_path / 't.onnx'} already exists; pass --overwrite to replace it (and "
        "t.onnx.json) or choose another --out"
    )
    assert (tmp_path / "t.onnx").read_text() == "mine" and not (tmp_path / "t.onnx.json").exists()
    r = icckd(capsys, "export", tmp_path / "t.safetensors", "--to", "onnx",
              "--out", tmp_path / "t.onnx", "--overwrite")  # fmt: skip
    assert r.code == 0, r.err
    assert (tmp_path / "t.onnx").read_bytes() != b"mine"


def test_an_unknown_format_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    digits_teacher(tmp_path / "t.safetensors")
    r = icckd(capsys, "export", tmp_path / "t.safetensors", "--to", "tflite",
              "--out", tmp_path / "t.tflite")  # fmt: skip
    assert r.code == 2
    assert r.err.strip() == (
        "error: invalid value for --to ('tflite'): use onnx, torchscript or exported"
    )
    r = icckd(capsys, "export", tmp_path / "t.safetensors", "--out", tmp_path / "t.pt")
    assert r.code == 2
    assert r.err.strip() == "error: missing option --to: give onnx, torchscript or exported"
    r = icckd(capsys, "export", tmp_path / "t.safetensors", "--to", "onnx", "--format", "yaml",
              "--out", tmp_path / "t.onnx")  # fmt: skip
    assert r.code == 2
    assert r.err.strip() == "error: invalid value for --format ('yaml'): use table or json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]


def test_the_old_spellings_format_onnx_and_json_still_work_with_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    digits_teacher(tmp_path / "t.safetensors")
    new = icckd(capsys, "export", tmp_path / "t.safetensors", "--to", "torchscript",
                "--out", tmp_path / "new.pt", "--format", "json")  # fmt: skip
    old = icckd(capsys, "export", tmp_path / "t.safetensors", "--format", "torchscript",
                "--out", tmp_path / "old.pt", "--json")  # fmt: skip
    assert (new.code, old.code, new.err) == (0, 0, "")
    assert old.err.splitlines() == [
        "warning: --format torchscript is deprecated here: use --to torchscript",
        "warning: --json is deprecated: use --format json",
    ]
    told_new, told_old = json.loads(new.out), json.loads(old.out)
    assert told_old["out"] == str(tmp_path / "old.pt")
    assert told_old["parity"] == told_new["parity"]
    both = icckd(capsys, "export", tmp_path / "t.safetensors", "--to", "onnx",
                 "--format", "torchscript", "--out", tmp_path / "x.pt")  # fmt: skip
    assert both.code == 2
    assert both.err.strip() == (
        "error: give the export format once: --to onnx (not also --format torchscript)"
    )
    assert not (tmp_path / "x.pt").exists()


def test_missing_onnx_runtime_names_the_extra(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digits_teacher(tmp_path / "t.safetensors")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    r = icckd(capsys, "export", tmp_path / "t.safetensors", "--to", "onnx",
              "--out", tmp_path / "t.onnx")  # fmt: skip
    assert r.code == 2
    assert r.err.strip() == (
        "error: --to onnx needs the onnx and onnxruntime packages (onnxruntime missing); "
        "install them with pip install -e '.[export]' (or use --to torchscript or exported)"
    )
    assert not (tmp_path / "t.onnx").exists()


class _DataDependent(ZooModel):
    """A net whose forward branches on a tensor's value: torch.export cannot trace it."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__("branchy", num_classes, 3)
        self.fc = torch.nn.Linear(3, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 3)."""
        pooled = x.mean(dim=(2, 3))
        return pooled if pooled.sum() > 0 else -pooled

    def forward_head(self, feats: Tensor) -> Tensor:
        """(B, 3) -> (B, num_classes)."""
        return self.fc(feats)


def test_a_model_the_exporter_cannot_trace_fails_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = model_registry.ModelSpec("branchy", 3, _DataDependent)
    monkeypatch.setitem(model_registry._SPECS, "branchy", spec)
    data = load_dataset("digits", test_per_class=1).spec.to_dict()
    meta = {"kind": "teacher", "arch": "branchy", "num_classes": 10, "dataset": data}
    save_model(tmp_path / "b.safetensors", _DataDependent(), {**meta, "config": {}})
    r = icckd(capsys, "export", tmp_path / "b.safetensors", "--to", "exported",
              "--out", tmp_path / "b.pt2")  # fmt: skip
    assert r.code == 1
    (line,) = r.err.strip().splitlines()
    assert line.startswith(
        f"error: cannot export {tmp_path / 'b.safetensors'} (branchy) as exported: "
    )
    assert "data-dependent" in line.lower() and line.endswith("; try another --to")
    assert not (tmp_path / "b.pt2").exists() and not list(tmp_path.glob(".b.pt2.*"))


def test_a_mismatch_beyond_the_tolerance_leaves_no_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digits_teacher(tmp_path / "t.safetensors")
    write, run, runtime = ex.FORMATS["torchscript"]
    off = lambda path, x: run(path, x) + 1e-3  # noqa: E731 - a runtime that is slightly off
    monkeypatch.setitem(ex.FORMATS, "torchscript", (write, off, runtime))
    r = icckd(capsys, "export", tmp_path / "t.safetensors", "--to", "torchscript",
              "--out", tmp_path / "t.pt")  # fmt: skip
    assert r.code == 1
    assert r.err.strip().startswith(
        f"error: the torchscript export of {tmp_path / 't.safetensors'} differs from the "
        "checkpoint by up to 0.001 in the logits of 32 digits test images, over the tolerance "
    )
    assert r.err.strip().endswith(
        "nothing was written: try another --to, or allow more with --tolerance"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]
    r = icckd(capsys, "export", tmp_path / "t.safetensors", "--to", "torchscript",
              "--out", tmp_path / "t.pt", "--tolerance", "1e-2")  # fmt: skip
    assert r.code == 0, r.err


# ----------------------------------------------------------------------------- ONNX that travels


def _export_onnx(capsys: pytest.CaptureFixture[str], src: Path, out: Path, *more: str) -> Any:
    r = icckd(capsys, "export", src, "--to", "onnx", "--out", out, "--format", "json", *more)
    assert r.code == 0, r.err
    return json.loads(r.out)


def _runs_elsewhere(files: list[Path], elsewhere: Path, model: ZooModel, src: Path) -> None:
    """The files moved to another folder still run there in onnxruntime, as the checkpoint."""
    elsewhere.mkdir()
    for f in files:
        f.rename(elsewhere / f.name)
    raw, normalised = _digit_images(3, src)
    with torch.inference_mode():
        want = model.eval()(normalised)
    got = _load("onnx", elsewhere / files[0].name)(raw)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # the dynamo exporter takes about 10 s for resnet8 here
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_an_onnx_export_is_one_file_that_runs_from_another_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, exporter: str
) -> None:
    model = digits_teacher(tmp_path / "t.safetensors")
    (tmp_path / "out").mkdir()
    out = tmp_path / "out/t.onnx"
    told = _export_onnx(capsys, tmp_path / "t.safetensors", out, "--onnx-exporter", exporter)
    # nothing beside the file and its JSON: no data file, no temporary one
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.onnx", "t.onnx.json"]
    assert told["external_data"] is None and told["bytes"] == out.stat().st_size
    assert json.loads((tmp_path / "out/t.onnx.json").read_text())["external_data"] is None
    _runs_elsewhere([out], tmp_path / "elsewhere", model, tmp_path / "t.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_an_onnx_export_over_the_limit_keeps_its_tensors_in_out_data(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    exporter: str,
) -> None:
    model = digits_teacher(tmp_path / "t.safetensors")
    src, out = tmp_path / "t.safetensors", tmp_path / "out/t.onnx"
    exporter_args = ("--onnx-exporter", exporter)
    monkeypatch.setattr(formats, "ONNX_INLINE_LIMIT", 0)  # resnet8 stands in for a 2 GB net
    told = _export_onnx(capsys, src, out, *exporter_args)
    data = tmp_path / "out/t.onnx.data"
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.onnx", "t.onnx.data", "t.onnx.json"]
    assert told["external_data"] == "t.onnx.data"
    assert json.loads((tmp_path / "out/t.onnx.json").read_text())["external_data"] == "t.onnx.data"
    assert told["bytes"] == out.stat().st_size + data.stat().st_size
    assert data.stat().st_size > 300_000 > out.stat().st_size  # resnet8's 78,042 float32 weights
    # --overwrite replaces the data file, and removes it when the new export needs none
    r = icckd(capsys, "export", src, "--to", "onnx", "--out", out, *exporter_args)
    assert r.code == 2 and "already exists; pass --overwrite" in r.err
    _export_onnx(capsys, src, out, "--overwrite", *exporter_args)
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.onnx", "t.onnx.data", "t.onnx.json"]
    _runs_elsewhere([out, data], tmp_path / "elsewhere", model, src)
    monkeypatch.setattr(formats, "ONNX_INLINE_LIMIT", 2**31 - 2**27)
    data.write_bytes(b"left from an earlier export")
    _export_onnx(capsys, src, out, "--overwrite", *exporter_args)
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.onnx", "t.onnx.json"]
