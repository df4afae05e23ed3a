"""Everything that talks to rich: progress while training, tables and JSON afterwards."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

out = Console(soft_wrap=True)
err = Console(stderr=True)

LOSS_ORDER = ("loss", "ce", "icc", "kd", "rkd", "dkd", "crd")
SHORT = {"icc_gate_pass": "gate", "icc_negatives": "negs", "icc_counted": "counted"}


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a table cell; NaN and None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One line per epoch: losses by name, gate statistics, accuracy, speed."""
    parts = [f"epoch {record['epoch']:>3}/{epochs}"]
    train = {k[6:]: v for k, v in record.items() if k.startswith("train_")}
    for name in [*LOSS_ORDER, *sorted(set(train) - set(LOSS_ORDER))]:
        if name in train:
            parts.append(f"{SHORT.get(name, name)} {train[name]:.3g}")
    if "top1" in record:  # epochs between --eval-every evaluations have none
        parts.append(f"top1 {record['top1']:.2f}")
    if "val_top1" in record:
        parts.append(f"val {record['val_top1']:.2f}")
    parts.append(f"lr {record['lr']:.3g}")
    parts.append(f"{record['images_per_s']:.0f} img/s")
    return "  ".join(parts)


def size_text(nbytes: float) -> str:
    """Bytes in decimal units: '9.6 kB', '1.23 GB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} B"


def teacher_cache_line(info: dict[str, Any]) -> str:
    """What the teacher-output store does: its size before it is written, or that it is read."""
    size, path = size_text(info["bytes"]), info["path"]
    if info["action"] == "read":
        return f"teacher cache: reading {path} ({size}); the teacher is not run"
    if info["action"] == "resume":
        return (
            f"teacher cache: resuming {path} at batch {info['done'] + 1} of {info['total']} "
            f"({size}, {info['dtype']})"
        )
    return f"teacher cache: writing {size} to {path} ({info['total']} batches, {info['dtype']})"


def _short(x: float) -> str:
    """A number as a recipe states it: 0.05, 5e-4."""
    text = f"{x:g}"
    if "e" not in text and x < 1e-3:
        text = f"{x:.0e}" if float(f"{x:.0e}") == x else text
    return text.replace("e-0", "e-")


def recipe_line(info: dict[str, Any]) -> str:
    """The first line of a run: which recipe, why, and what it trains with."""
    name = "AdamW" if info["optimizer"] == "adamw" else "SGD"
    lr = f"lr {info['lr']:g}"
    if info.get("lr_rule"):
        r = info["lr_rule"]
        lr += f" ({_short(r['lr'])} x {r['batch']}/{r['per']})"
    parts = [f"{name} {lr}"]
    if info["optimizer"] == "sgd":
        parts.append(f"momentum {info['momentum']:g}")
    parts.append(f"wd {_short(info['weight_decay'])}")
    if info["schedule"] == "cosine":
        parts.append("cosine")
    elif info["decay_epochs"]:
        at = ",".join(map(str, info["decay_epochs"]))
        plural = "s" if len(info["decay_epochs"]) > 1 else ""
        parts.append(f"x{info['decay_rate']:g} at epoch{plural} {at}")
    else:
        parts.append("no decay")
    warm = info.get("warmup_epochs") or 0
    if warm:
        parts.append(f"{warm} warm-up epoch{'s' if warm > 1 else ''}")
    return f"recipe: {info['name']} ({info['reason']}): " + ", ".join(parts)


def progress_bar(first: str, unit: str) -> Progress:
    """A transient bar on stderr (off when stderr is not a terminal): label, bar, count, times."""
    return Progress(
        TextColumn(first),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} " + unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


class TrainingProgress:
    """A callback for the engine: a progress bar and one line per epoch, on stderr.

    The recipe line comes first: at once on a terminal; in a log, just before the first
    epoch line, so a run that fails in its first epoch writes its one error line alone.
    """

    def __init__(self, title: str, quiet: bool = False) -> None:
        self.title, self.quiet = title, quiet
        self.recipe: dict[str, Any] = {}  # for the JSON summary
        self.pending: str | None = None
        self.progress: Progress | None = None
        self.task: Any = None
        self.epochs = 0
        self.decode: Progress | None = None
        self.decode_task: Any = None

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if self.quiet:
            return
        if event == "decode":
            self._decoding(info)
        elif event == "teacher_cache":
            err.print(escape(teacher_cache_line(info)), highlight=False, soft_wrap=True)
        elif event == "teacher_cache_pass":
            what = "teacher cache: running the teacher"
            self._decoding({"what": what, **info}, "batches")
        elif event == "warning":
            warning(info["message"], self.progress.console if self.progress else err)
        elif event == "recipe":
            self.recipe, self.pending = info, recipe_line(info)
            if err.is_terminal:
                self._print_pending(err)
        elif event == "start":
            self.epochs = info["epochs"]
            total = info["epochs"] * info["steps"]
            self.progress = progress_bar(f"[bold]{escape(self.title)}", "steps")
            self.progress.start()
            self.task = self.progress.add_task(
                self.title, total=total, completed=info["epoch"] * info["steps"]
            )
        elif event == "step" and self.progress is not None:
            self.progress.advance(self.task)
        elif event == "epoch":
            line = epoch_line(info, self.epochs)
            console = self.progress.console if self.progress else err
            self._print_pending(console)
            console.print(line, highlight=False, soft_wrap=True)
        elif event == "end" and self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _print_pending(self, console: Console) -> None:
        if self.pending is not None:
            console.print(escape(self.pending), highlight=False, soft_wrap=True)
            self.pending = None

    def _decoding(self, info: dict[str, Any], unit: str = "images") -> None:
        """A bar per decoding pass ('decoding 100,000 Tiny-ImageNet train JPEGs in 2 processes')."""
        if self.decode is None:
            self.decode = progress_bar(escape(info["what"]), unit)
            self.decode.start()
            self.decode_task = self.decode.add_task(info["what"], total=info["total"])
        self.decode.update(self.decode_task, completed=info["done"])
        if info["done"] >= info["total"]:
            self.decode.stop()
            self.decode = None

    def close(self) -> None:
        """Stop the bars (also after an error)."""
        if self.decode is not None:
            self.decode.stop()
            self.decode = None
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class DownloadProgress:
    """A callback for downloads: one transient bar of bytes on stderr."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: Any = None

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event != "download":
            return
        if self.progress is None:
            name = escape(str(info["url"]).rsplit("/", 1)[-1])
            self.progress = Progress(
                TextColumn(f"[bold]download[/] {name}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
                disable=not err.is_terminal,
            )
            self.progress.start()
            self.task = self.progress.add_task("download", total=info["total"])
        self.progress.update(self.task, completed=info["done"], total=info["total"])

    def close(self) -> None:
        """Stop the bar (also after an error)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def fetched_table(r: dict[str, Any]) -> None:
    """The table printed by `icckd fetch-teacher`."""
    top1 = "not evaluated" if r["top1"] is None else f"{r['top1']:.2f} % ({r['dataset']} test)"
    rows = [
        ("checkpoint", r["checkpoint"]),
        ("teacher", r["name"]),
        ("architecture", r["arch"]),
        ("data set", f"{r['dataset']} ({r['num_classes']} classes)"),
        ("source", r["url"]),
        ("sha256", r["sha256"] + ("" if r["verified"] else " (no published hash to check)")),
        ("top-1", top1),
    ]
    key_value_table("published teacher", rows)


def print_json(obj: Any) -> None:
    """One JSON object on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj, indent=2, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)


def key_value_table(title: str, rows: Sequence[tuple[str, Any]]) -> None:
    """A two-column table."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    for k, v in rows:
        table.add_row(k, fmt(v))
    out.print(table)


def run_summary(kind: str, result: Any) -> None:
    """The table printed after train-teacher or distill."""
    rows = [
        ("checkpoint", str(result.checkpoint)),
        ("top-1 (last epoch)", result.final["top1"]),
        ("top-5 (last epoch)", result.final["top5"]),
        ("NLL", result.final["nll"]),
        ("ECE", result.final["ece"]),
        *best_rows(result.best),
        ("parameters", f"{result.params:,}"),
        ("time", f"{result.elapsed:.1f} s"),
    ]
    key_value_table(f"{kind} finished", rows)


def best_rows(best: dict[str, Any]) -> list[tuple[str, str]]:
    """The best epoch's rows: on validation (and the test split there) or on the test split."""
    if best.get("chosen_on") != "val":
        return [("best top-1", f"{best['top1']:.2f} (epoch {best['epoch']})")]
    return [
        ("best on validation", f"epoch {best['epoch']} (val top-1 {best['val_top1']:.2f})"),
        ("top-1 at best-val epoch", f"{best['top1']:.2f}"),
    ]


def best_phrase(best: dict[str, Any]) -> str:
    """'best 71.20 at epoch 9', or '70.10 at epoch 9, the best on validation'."""
    if best.get("chosen_on") == "val":
        return f"{best['top1']:.2f} at epoch {best['epoch']}, the best on validation"
    return f"best {best['top1']:.2f} at epoch {best['epoch']}"


def eval_table(m: dict[str, Any]) -> None:
    """The table printed by `icckd eval` (and `--cost-only`, without the accuracy rows)."""
    from icckd_cli.work.cost import si, timing_note

    rows: list[tuple[str, Any]] = [
        ("checkpoint", m["checkpoint"]),
        ("architecture", m["arch"]),
        ("kind", m["kind"]),
    ]
    if "top1" in m:
        rows += [
            ("data set", f"{m['dataset']} ({m['split']}, {m['n']} images)"),
            ("top-1 %", m["top1"]),
            ("top-5 %", m["top5"]),
            ("NLL", m["nll"]),
            ("ECE", m["ece"]),
        ]
    size = m["image_size"]
    rows += [
        ("parameters", f"{m['params']:,}"),
        ("size", f"{m['size_mb']:.2f} MB (tensors as stored, 1 MB = 10^6 bytes)"),
        ("MACs", f"{si(m['macs'])} (one {size}x{size} image; FLOPs = 2 x MACs)"),
    ]
    t = m.get("timing")
    if t:
        reps = t["reps"]
        rows.append(
            ("latency", f"{m['latency_ms']:.3f} ms (batch 1; {timing_note(t)}; median of "
             f"{reps['latency']} runs)")
        )  # fmt: skip
        if m.get("throughput") is not None:
            rows.append(
                ("throughput", f"{m['throughput']:,.0f} images/s (batch {t['batch_size']}; "
                 f"median of {reps['throughput']} runs)")
            )  # fmt: skip
    key_value_table("evaluation" if "top1" in m else "cost", rows)


def export_table(r: dict[str, Any]) -> None:
    """The table printed by `icckd export`."""
    p = r["parity"]
    shape = "(" + ", ".join(str(d) for d in r["input"]["shape"]) + ")"
    rows = [
        ("file", f"{r['out']} ({r['bytes']:,} bytes, {r['exporter']})"),
        ("beside it", r["sidecar"]),
        ("input", f"images {shape}, RGB in 0..1 (normalisation inside the graph)"),
        ("parity", f"{p['inputs']} through {p['runtime']}"),
        ("largest difference", f"{p['max_abs_diff']:.3g} (tolerance {p['tolerance']:g} x "
         f"{p['logit_scale']:.3g})"),
        ("top-1 agrees", f"{p['top1_agree']} of {p['images']}"),
    ]  # fmt: skip
    key_value_table(f"exported {r['arch']} as {r['format']}", rows)


def models_table(
    rows: list[tuple[str, int | None, int | None, int | None]], title: str = "model zoo"
) -> None:
    """`icckd models`: name, parameters at 100 classes, feature size, intended input size."""
    table = Table(title=f"{title} (parameters at 100 classes)", title_justify="left")
    table.add_column("architecture")
    table.add_column("parameters", justify="right")
    table.add_column("feature dim", justify="right")
    table.add_column("input", justify="right")
    for name, params, dim, size in rows:
        table.add_row(
            name,
            "-" if params is None else f"{params:,}",
            "-" if dim is None else str(dim),
            "-" if size is None else f"{size}x{size}",
        )
    out.print(table)


def error(message: str) -> None:
    """A one-line error on stderr."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """A one-line note on stderr."""
    err.print(escape(message), highlight=False, soft_wrap=True)


def warning(message: str, console: Console = err) -> None:
    """A one-line warning on stderr (the run goes on)."""
    console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------- soft labels

SUMMARY_ROWS = (
    ("accuracy", "top-1 %"),
    ("target_prob", "mean target probability"),
    ("nontarget_mass", "non-target mass"),
    ("entropy", "entropy of p"),
    ("entropy_nontarget", "entropy of non-target q"),
    ("intra_distance", "intra-class distance"),
    ("inter_distance", "inter-class distance"),
    ("ratio", "intra / inter (soft labels)"),
    ("feature_ratio", "intra / inter (features)"),
    ("nc1", "NC1 tr(Sw Sb+)/C"),
    ("effective_rank", "effective rank (mean)"),
)


def _objective_label(objective: dict[str, Any]) -> str:
    terms = objective.get("terms", {})
    if not terms:
        return "-"
    return " + ".join(f"{w:g} {n}" if w != 1 else n for n, w in terms.items())


def softlabel_summary(results: list[Any], temperature: float, split: str) -> None:
    """One column per checkpoint, one row per statistic."""
    table = Table(
        title=f"soft-label diversity ({split} split, T = {temperature:g})", title_justify="left"
    )
    table.add_column("statistic", style="bold")
    for r in results:
        table.add_column(r.name, justify="right")
    table.add_row("architecture", *[r.arch for r in results])
    table.add_row("objective", *[_objective_label(r.objective) for r in results])
    for key, label in SUMMARY_ROWS:
        digits = 2 if key == "accuracy" else 4
        table.add_row(label, *[fmt(r.stats.overall.get(key), digits) for r in results])
    out.print(table)


def softlabel_per_class(results: list[Any], all_classes: bool, shown: int = 5) -> None:
    """Per-class intra-class distance and target probability, most and least diverse first."""
    first = results[0]
    rows = [c for c in first.stats.per_class if c["count"]]
    rows.sort(key=lambda c: -c["intra_distance"])
    if not all_classes and len(rows) > 2 * shown:
        rows = rows[:shown] + rows[-shown:]
        title = f"per class: the {shown} most and {shown} least diverse (by {first.name})"
    else:
        title = "per class (sorted by intra-class distance of the first checkpoint)"
    table = Table(title=title, title_justify="left")
    table.add_column("class")
    for r in results:
        table.add_column(f"{r.name}\nintra", justify="right")
        table.add_column(f"{r.name}\np(y)", justify="right")
    for c in rows:
        k = int(c["class"])
        cells = []
        for r in results:
            pc = r.stats.per_class[k]
            cells += [fmt(pc["intra_distance"], 4), fmt(pc["target_prob"], 3)]
        table.add_row(first.classes[k], *cells)
    out.print(table)


# ---- experiment


class ExperimentProgress:
    """The matrix's progress view: which run of how many, and that run's progress bar."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.progress: Progress | None = None
        self.matrix: Any = None
        self.run: Any = None
        self.cache_pass: Any = None
        self.label = ""
        self.epochs = 0

    def _start(self, total: int, done: int) -> None:
        self.progress = progress_bar("{task.description}", "{task.fields[unit]}")
        self.progress.start()
        self.matrix = self.progress.add_task(
            f"[bold]{escape(self.name)}", total=total, completed=done, unit="runs"
        )

    def _print(self, line: str) -> None:
        console = self.progress.console if self.progress else err
        console.print(escape(line), highlight=False, soft_wrap=True)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "plan":
            self._start(info["total"], info["done"])
            return
        if event == "warning":
            warning(info["message"], self.progress.console if self.progress else err)
            return
        if self.progress is None:
            return
        if event == "run":
            self.label = f"run {info['index']}/{info['total']}: {info['label']}"
            if info["action"] == "skip":
                self._print(f"{self.label}: finished already, skipped")
                return
            verb = "resuming" if info["action"] == "resume" else "training"
            self._print(f"{self.label}: {verb}")
        elif event == "recipe":
            self._print(f"  {recipe_line(info)}")
        elif event == "start":
            self.epochs = info["epochs"]
            total = info["epochs"] * info["steps"]
            self.run = self.progress.add_task(
                self.label, total=total, completed=info["epoch"] * info["steps"], unit="steps"
            )
        elif event == "step" and self.run is not None:
            self.progress.advance(self.run)
        elif event == "epoch" and self.run is not None:
            desc = f"{self.label}  epoch {info['epoch']}/{self.epochs}"
            if "top1" in info:
                desc += f" top-1 {info['top1']:.2f}"
            self.progress.update(self.run, description=desc)
        elif event == "run_end":
            final, best = info["final"], info["best"]
            self._print(
                f"{self.label}: top-1 {final['top1']:.2f} ({best_phrase(best)}), "
                f"{info['elapsed']:.0f} s"
            )
            self.progress.advance(self.matrix)
            if self.run is not None:
                self.progress.remove_task(self.run)
                self.run = None
        elif event == "diversity":
            self._print(f"soft-label diversity of {info['count']} teacher checkpoint(s)")
        elif event == "cost":
            timed = " and batch-1 latency" if info["latency"] else ""
            self._print(f"parameters, MACs{timed} of {info['count']} architecture(s)")
        elif event == "teacher_cache":
            self._print(f"{self.label}: {teacher_cache_line(info)}")
        elif event == "teacher_cache_pass":  # the teacher's one pass before the student trains
            if self.cache_pass is None:
                self.cache_pass = self.progress.add_task(
                    f"{self.label}: teacher cache", total=info["total"], unit="batches"
                )
            self.progress.update(self.cache_pass, completed=info["done"])
            if info["done"] >= info["total"]:
                self.progress.remove_task(self.cache_pass)
                self.cache_pass = None

    def close(self) -> None:
        """Stop the view (also after an error or Ctrl-C)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def experiment_plan(runs: Sequence[tuple[str, str]]) -> None:
    """`icckd experiment --dry-run`: every run and its state."""
    table = Table(title="runs of the experiment", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("run")
    table.add_column("state")
    for i, (label, state) in enumerate(runs, 1):
        table.add_row(str(i), label, state)
    out.print(table)


def experiment_tables(tables: Sequence[Any], written: Sequence[str] = ()) -> None:
    """The results tables of an experiment (title, columns, rows, notes of each)."""
    for spec in tables:
        table = Table(title=spec.title, title_justify="left")
        for i, name in enumerate(spec.columns):
            numeric = all("±" in r[i] or r[i].startswith("n/a") for r in spec.rows if r[i])
            table.add_column(name, justify="right" if numeric and spec.rows else "left")
        for row in spec.rows:
            table.add_row(*row)
        out.print(table)
        for line in spec.notes:
            out.print(f"  {line}", highlight=False)
        out.print()
    for path in written:
        note(f"wrote {path}")
