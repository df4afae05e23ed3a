"""Accuracy against cost: every teacher and student with its parameters, MACs and latency.

Cost belongs to an architecture, not to a run: it is measured once per architecture on a
finished checkpoint of it (the first in the plan), on the experiment's device, with a few
timed runs (the quickstart's resnet8 takes well under a second). Top-1 is the mean over
seeds at the last epoch; a student's speed-up is its teacher's batch-1 latency over its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from icckd_cli.commands.experiment.finished import FinishedRuns, RunResult
from icckd_cli.commands.experiment.plan import Experiment
from icckd_cli.commands.experiment.result_types import (
    COST_KEYS,
    Baseline,
    CostRow,
    Costs,
    Stats,
    StudentCell,
    TeacherSummary,
)
from icckd_cli.commands.experiment.tables import TableSpec, cell

# timed runs per architecture: batch-1 latency of a small net is a fraction of a millisecond,
# and the median of 10 after a warm-up is stable to a few percent where nothing else runs
EXPERIMENT_REPS = 10
FIGURE = "accuracy_latency.png"


def measure_costs(
    exp: Experiment,
    callback: Callable[[str, dict[str, Any]], None],
    finished: FinishedRuns | None = None,
) -> dict[str, Any]:
    """{arch: cost} for every architecture with a finished run, and how latency was timed."""
    import torch

    from icckd_cli.commands.evaluation import checkpoint_channels_last, checkpoint_cost
    from icckd_cli.training.engine import resolve_device

    finished = FinishedRuns() if finished is None else finished
    first: dict[str, RunResult] = {}
    for run in exp.runs:
        if (result := finished.of(run)) is not None:
            first.setdefault(run.config.arch, result)
    if not first:
        return {"latency": exp.options.latency, "timing": None, "archs": {}}
    callback("cost", {"count": len(first), "latency": exp.options.latency})
    device = resolve_device(exp.options.device)
    archs, timing = {}, None
    for arch, result in first.items():
        model, meta = result.model(device), dict(result.meta)  # the header read once
        if checkpoint_channels_last(meta, device):
            model = model.to(memory_format=torch.channels_last)
        cost = checkpoint_cost(result.path, model, meta, device, exp.options.latency, None,
                               EXPERIMENT_REPS)  # fmt: skip
        timing = cost.pop("timing") or timing
        archs[arch] = {k: cost[k] for k in COST_KEYS} | {"checkpoint": str(result.path)}
    return {"latency": exp.options.latency, "timing": timing, "archs": archs}


def cost_rows(
    teachers: Sequence[TeacherSummary],
    students: Sequence[StudentCell],
    baseline: Baseline | None,
    costs: Mapping[str, Any] | None,
) -> Costs:
    """The table's numbers: one row per teacher, per student (per teacher), and the baseline."""
    archs = (costs or {}).get("archs", {})
    latency = {t.name: archs.get(t.arch, {}).get("latency_ms") for t in teachers}

    def row(role: str, name: str, arch: str, top1: Stats, teacher: str | None = None) -> CostRow:
        cost = {k: archs.get(arch, {}).get(k) for k in COST_KEYS}
        mine, theirs = cost["latency_ms"], latency.get(teacher) if teacher else None
        speedup = theirs / mine if theirs and mine else None
        return CostRow(role, name, arch, top1, cost, teacher, speedup)

    rows = [row("teacher", t.name, t.arch, t.top1) for t in teachers]
    for s in students:
        rows.append(row("student", f"{s.student} from {s.teacher}", s.arch, s.top1.last, s.teacher))
    if baseline is not None:
        rows.append(row("baseline", "alone (CE)", baseline.arch, baseline.top1.last))
    return Costs((costs or {}).get("latency"), (costs or {}).get("timing"), rows)


def cost_table(results: Mapping[str, Any]) -> TableSpec | None:
    """The accuracy-against-cost table, or None for results made before it existed."""
    from icckd_cli.base.units import si, timing_note

    cost = results.get("cost")
    if not cost:
        return None
    timing = cost.get("timing")
    measured = "" if timing is None else f"; latency on {timing_note(timing)}"
    rows = []
    for r in cost["rows"]:
        rows.append([
            r["name"], r["arch"], cell(r["top1"]),
            "n/a" if r["params"] is None else f"{r['params']:,}",
            "n/a" if r["macs"] is None else si(r["macs"]),
            "n/a" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}",
            "" if r["speedup"] is None else f"{r['speedup']:.2f}x",
        ])  # fmt: skip
    size = next((r["image_size"] for r in cost["rows"] if r["image_size"]), None)
    notes = [
        f"MACs: multiply-accumulates of one {size}x{size} image (torch.utils.flop_counter, "
        "FLOPs / 2); cost is per architecture, measured on one finished checkpoint of it"
        if size
        else "cost is per architecture: n/a until a run of it has finished",
        "speed-up: the teacher's batch-1 latency over the student's, on this machine"
        if cost.get("latency")
        else "latency not measured (latency = false in [experiment], or --no-latency)",
    ]
    title = f"accuracy against cost (top-1 % at the last epoch, mean ± std over seeds{measured})"
    columns = ["model", "arch", "top-1", "params", "MACs", "latency ms (batch 1)", "speed-up"]
    figure = cost.get("figure")
    return TableSpec(title, columns, rows, notes, figure, "top-1 against latency", key="cost")


def cost_figure(exp: Experiment, cost: Costs) -> str | None:
    """accuracy_latency.png beside results.md (None when no latency was measured)."""
    from icckd_cli.base.units import timing_note
    from icckd_cli.presentation.run_plots import CostPoint, write_accuracy_latency

    points = [
        CostPoint(r.name, r.role, r.cost["latency_ms"], r.top1.mean, r.top1.std)
        for r in cost.rows
        if r.cost["latency_ms"] is not None and r.top1.mean is not None
    ]
    if not points:
        return None
    title = f"top-1 against latency ({exp.options.name}, {exp.options.dataset}; " + (
        f"{timing_note(cost.timing)})" if cost.timing else "this machine)"
    )
    write_accuracy_latency(points, Path(exp.options.out) / FIGURE, title)
    return FIGURE
