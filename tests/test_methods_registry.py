"""methods/registry.py: one place the --method choices, options, TOML keys and parts come from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from icckd_cli.data import Batch
from icckd_cli.methods import registry
from icckd_cli.models import create_model
from icckd_cli.settings.config import METHOD_PRESETS, DistillConfig, build, read_toml
from icckd_cli.training.objectives import DistillObjective
from tests.helpers import icckd, parse_experiment_text, tiny_experiment


def test_choices_parts_and_presets() -> None:
    # a method added later joins these at the place its order gives it
    assert registry.choices()[:6] == ("kd", "rkd", "kd+rkd", "dkd", "crd", "dist")
    assert registry.loss_parts()[:8] == ("loss", "ce", "icc", "kd", "rkd", "dkd", "crd", "dist")
    assert [m.name for m in registry.methods()][:5] == ["kd", "rkd", "dkd", "crd", "dist"]
    # today's published weights, exactly; every weight key present, 0 where a term is off
    nonzero = {k: {w: v for w, v in p.items() if v} for k, p in METHOD_PRESETS.items()}
    assert (
        nonzero
        | {  # the published weights, and no preset beyond these has changed them
            "kd": {"ce_weight": 0.1, "kd_weight": 0.9},
            "rkd": {"ce_weight": 1.0, "rkd_weight": 1},
            "kd+rkd": {"ce_weight": 0.1, "kd_weight": 0.9, "rkd_weight": 1},
            "dkd": {"ce_weight": 1.0, "dkd_weight": 1},
            "crd": {"ce_weight": 1.0, "crd_weight": 0.8},
            "dist": {"ce_weight": 1.0, "dist_weight": 1.0},
        }
        == nonzero
    )
    assert all(list(p) == list(registry.weight_keys()) for p in METHOD_PRESETS.values())


def test_a_name_registers_once() -> None:
    kd = registry.methods()[0]
    with pytest.raises(ValueError, match="'kd' is registered twice"):
        registry.register(kd)


def test_method_settings_are_toml_keys_and_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('method = "dist"\ndist_beta = 1.0\n')
    cfg = build(DistillConfig, {"dist_gamma": 3.0}, toml)
    assert (cfg.method, cfg.dist_beta, cfg.dist_gamma) == ("dist", 1.0, 3.0)
    assert read_toml(toml)["dist_beta"] == 1.0
    toml.write_text("logit_standardization = true\n")
    assert build(DistillConfig, {}, toml).logit_standardization is True
    defaults = build(DistillConfig, {})
    assert (defaults.dist_beta, defaults.dist_gamma, defaults.kd_temperature) == (2.0, 2.0, 4.0)
    assert defaults.logit_standardization is False
    r = icckd(capsys, "distill", "--method", "dist", "--dist-beta", "-1", "--teacher", "t.pt")
    assert r.code != 0 and r.err.count("\n") == 1
    assert "invalid value for --dist-beta (-1.0)" in r.err
    r = icckd(capsys, "distill", "--method", "nope")
    assert "Input should be 'kd', 'rkd', 'kd+rkd', 'dkd', 'crd', 'dist'" in r.err.replace(
        " or", ","
    )


def test_experiment_students_take_every_registered_method(tmp_path: Path) -> None:
    text = tiny_experiment(tmp_path, ('method = "kd"', 'method = "dist"'))
    exp = parse_experiment_text(text)
    assert [s.config.method for s in exp.students] == ["dist"]


def _batch(n: int = 6) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch([torch.randn(n, 3, 32, 32, generator=g)], torch.arange(n) % 3, torch.arange(n))


# the parts whose method trains modules of its own beside the student
OWN_MODULES = {"crd", "fitnet", "cc", "vid", "ab", "ft", "ofd", "reviewkd"}


@pytest.mark.parametrize("name", registry.choices())
def test_every_method_builds_its_objective_and_trains_a_step(name: str) -> None:
    torch.manual_seed(0)
    cfg = build(DistillConfig, {"method": name, "crd_nce_k": 4})
    teacher, student = create_model("resnet8", 3), create_model("resnet8", 3)
    weights = cfg.resolved_weights()
    obj = DistillObjective.from_config(
        cfg, teacher, student.feature_dim, 6, epochs=12, student=student, image_size=32
    )
    expected = {k.removesuffix("_weight") for k, v in weights.items() if v}
    # a part is a term of the run, of a preliminary stage before it (AB, FSP, FT), or both
    assert {t.name for t in obj.terms} | {t.name for t in obj.preliminary} == expected
    # a term's module sits under the part's name (resumable state keys: objective/crd.*)
    assert {name for name, _ in obj.named_children()} == expected & OWN_MODULES
    # (AB between equal shapes connects by identities: no tensors to keep)
    assert {k.split(".")[0] for k in obj.state_dict()} == expected & OWN_MODULES - {"ab"}
    params = [*student.parameters(), *obj.parameters()]
    opt = torch.optim.SGD(params, lr=0.1)
    before = [p.detach().clone() for p in student.parameters()]
    # the first epoch after the preliminary stage, where there is one (its schedule scaled)
    loss, stats = obj(student, _batch(), obj.preliminary_epochs)
    assert torch.isfinite(loss) and set(stats) >= {t.name for t in obj.terms}
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = [not torch.equal(b, p) for b, p in zip(before, student.parameters(), strict=True)]
    assert all(moved[:1]) and sum(moved) > len(moved) // 2
    record = obj.describe()
    assert all(key in record for m in registry.methods() for key in m.recorded)


def test_the_cli_and_the_settings_start_without_torch() -> None:
    """The registry reads the methods' settings without importing torch (`icckd --help`)."""
    import subprocess
    import sys

    code = (
        "import sys, icckd_cli.cli.train, icckd_cli.settings.config; "
        "from icckd_cli.methods import registry; registry.choices(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# A whole new method in one file: its loss, its settings (one of them a `distill` option) and
# a warm-up hook (`resolve`: the whole run unless given). Nothing else of the package changes.
TOY_METHOD = '''
"""toy: half the squared logit difference, ramped in linearly over its warm-up."""

from pydantic import BaseModel, Field

from icckd_cli.methods.registry import Context, Method, Part, register


class ToySettings(BaseModel):
    toy_weight: float | None = Field(None, ge=0, description="Toy weight.")
    toy_scale: float = Field(1.0, gt=0, description="Toy scale.")
    toy_warmup: int | None = Field(None, ge=0)  # None: the whole run


def toy_loss(logits, t_logits, scale):
    """scale * mean of half the squared difference: (N, C), (N, C) -> ()."""
    return scale * 0.5 * ((logits - t_logits.detach()) ** 2).mean()


def _resolve(settings, context):
    warmup = context.epochs if settings.toy_warmup is None else settings.toy_warmup
    return settings.model_copy(update={"toy_warmup": warmup})


def _build(settings, context):
    import torch

    def term(out, stats):
        ramp = min((out["epoch"] + 1) / settings.toy_warmup, 1.0)
        stats["toy_ramp"] = torch.full((), ramp)
        return ramp * toy_loss(out["logits"], out["t_logits"], settings.toy_scale)

    return {"toy": Part(term)}


register(Method(name="toy", order=90, parts=("toy",), settings=ToySettings,
                preset={"ce_weight": 1.0, "toy_weight": 0.5}, build=_build,
                recorded=("toy_scale", "toy_warmup"), resolve=_resolve))
'''


@pytest.mark.slow
def test_a_method_in_one_file_runs_through_distill(reference: Path, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    from safetensors import safe_open

    # the file, and an installed-distribution record naming it in the methods' entry points
    plugin = tmp_path / "plugin"
    (plugin / "icckd_toy-0.1.dist-info").mkdir(parents=True)
    (plugin / "icckd_toy_method.py").write_text(TOY_METHOD)
    info = plugin / "icckd_toy-0.1.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: icckd-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINTS}]\ntoy = icckd_toy_method\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), *sys.path])}
    out = tmp_path / "toy"
    cmd = [sys.executable, "-m", "icckd_cli", "distill", "--teacher",
           str(reference / "model.safetensors"), "--arch", "resnet8", "--dataset", "digits",
           "--train-per-class", "20", "--test-per-class", "5", "--epochs", "2", "--device",
           "cpu", "--method", "toy", "--toy-scale", "3", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # the warm-up hook resolved 2 epochs: the term weighs 1/2, then 2/2
    assert [h["train_toy_ramp"] for h in history] == [0.5, 1.0]
    assert all(h["train_toy"] > 0 for h in history)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    objective = json.loads(meta["objective"])
    assert objective["terms"] == {"ce": 1.0, "toy": 0.5}  # its preset's weights
    assert (objective["toy_scale"], objective["toy_warmup"]) == (3.0, 2)  # given, resolved
    config = json.loads((out / "config.json").read_text())
    assert (config["method"], config["toy_scale"], config["toy_warmup"]) == ("toy", 3.0, None)
