"""The accuracy-against-cost table of an experiment: per architecture, with speed-ups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from icckd_cli.base.checkpoint import save_model
from icckd_cli.commands.cost import count_macs, count_params
from icckd_cli.commands.experiment.config import load_experiment
from icckd_cli.commands.experiment.costs import FIGURE, cost_figure, measure_costs
from icckd_cli.commands.experiment.markdown import result_tables, results_markdown
from icckd_cli.commands.experiment.plan import Experiment
from icckd_cli.commands.experiment.results import collect
from icckd_cli.data import load_dataset
from icckd_cli.models import create_model
from tests.helpers import icckd, parse_experiment_text, tiny_experiment

TOP1 = {"teachers/ce": 90.0, "teachers/icc": 92.0, "students/ce/kd": 80.0,
        "students/icc/kd": 82.0, "baseline": 70.0}  # fmt: skip


def _finish(exp: Experiment) -> None:
    """Every run of the plan 'finished': an untrained model saved with a top-1 per seed."""
    spec = load_dataset("digits", train_per_class=20, test_per_class=5).spec.to_dict()
    for run in exp.runs:
        torch.manual_seed(run.seed)
        model = create_model(run.config.arch, 10)
        group = run.label.rsplit("/", 1)[0]
        top1 = {"top1": TOP1[group] + run.seed}
        meta = {"kind": "teacher" if run.kind != "student" else "student",
                "arch": run.config.arch, "num_classes": 10, "dataset": spec, "config": {},
                "metrics": {"final": top1, "best": top1}}  # fmt: skip
        save_model(run.out / "model.safetensors", model, meta)


def test_cost_table_of_a_tiny_experiment(tmp_path: Path) -> None:
    text = tiny_experiment(tmp_path, ('arch = "resnet8"  # teacher', 'arch = "resnet20"'))
    exp = parse_experiment_text(text)
    _finish(exp)
    events: list[str] = []
    costs = measure_costs(exp, lambda event, info: events.append(event))
    assert events == ["cost"] and set(costs["archs"]) == {"resnet20", "resnet8"}
    for arch, cost in costs["archs"].items():
        model = create_model(arch, 10)
        assert cost["params"] == count_params(model) and cost["image_size"] == 32
        assert cost["macs"] == count_macs(model, 32) and cost["latency_ms"] > 0
    assert costs["timing"]["device"] == "cpu" and costs["timing"]["reps"]["latency"] <= 10
    collected = collect(exp, {}, costs)
    results = collected.to_json()
    rows = {r["name"]: r for r in results["cost"]["rows"]}
    assert list(rows) == ["ce", "icc", "kd from ce", "kd from icc", "alone (CE)"]
    assert rows["ce"]["top1"]["mean"] == 90.5 and rows["kd from icc"]["top1"]["mean"] == 82.5
    big, small = costs["archs"]["resnet20"], costs["archs"]["resnet8"]
    assert rows["kd from ce"]["speedup"] == big["latency_ms"] / small["latency_ms"]
    assert rows["ce"]["speedup"] is None and rows["alone (CE)"]["speedup"] is None
    assert rows["alone (CE)"]["macs"] == small["macs"] and rows["icc"]["macs"] == big["macs"]

    table = result_tables(results)[-1]
    assert table.title.startswith("accuracy against cost (top-1 % at the last epoch")
    assert "latency on cpu, " in table.title
    cells = {r[0]: r[1:] for r in table.rows}
    speedup = f"{big['latency_ms'] / small['latency_ms']:.2f}x"
    assert cells["kd from ce"] == [
        "resnet8", "80.50 ± 0.71", f"{small['params']:,}", "12.50 M",
        f"{small['latency_ms']:.3f}", speedup,
    ]  # fmt: skip
    assert cells["ce"][-1] == ""

    results["cost"]["figure"] = cost_figure(exp, collected.cost)
    assert results["cost"]["figure"] == FIGURE
    assert (tmp_path / "exp" / FIGURE).read_bytes().startswith(b"\x89PNG")
    markdown = results_markdown(results)
    assert "## accuracy against cost" in markdown
    assert f"![top-1 against latency]({FIGURE})" in markdown


def test_without_latency_the_table_keeps_params_and_macs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_experiment(tmp_path))
    exp = load_experiment(config)
    _finish(exp)
    # every run is done: the command only measures the teachers and the cost, then writes
    r = icckd(capsys, "experiment", config, "--no-latency", "--format", "json")
    assert r.code == 0, r.err
    results = r.json()
    assert results == json.loads((tmp_path / "exp/results.json").read_text())
    cost = results["cost"]
    assert cost["latency"] is False and cost["timing"] is None and cost["figure"] is None
    assert all(row["latency_ms"] is None and row["macs"] == 12_501_632 for row in cost["rows"])
    assert not (tmp_path / "exp" / FIGURE).exists()
    md = (tmp_path / "exp/results.md").read_text()
    assert "latency not measured (latency = false in [experiment], or --no-latency)" in md
    config.write_text(
        tiny_experiment(tmp_path, ('device = "cpu"', 'device = "cpu"\nlatency = true'))
    )
    r = icckd(capsys, "experiment", config)
    assert r.code == 0, r.err
    assert "accuracy against cost" in r.out and f"wrote {tmp_path / 'exp' / FIGURE}" in r.err
