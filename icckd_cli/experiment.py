"""`icckd experiment`: teachers x student methods x seeds as ordinary runs, and one table.

Every cell of the matrix is a plain train-teacher or distill run in its own folder:

    OUT/teachers/<teacher>/seed<k>/               cross-entropy or intra-class teacher
    OUT/students/<teacher>/<student>/seed<k>/     distilled from the teacher of seed k
    OUT/baseline/seed<k>/                         the student architecture alone (optional)

A folder holding model.safetensors is finished and skipped; one holding state.safetensors
is resumed; so running the same command again after Ctrl-C only does what is left. The
results (mean and sample std over seeds, paired differences intra-class minus
cross-entropy, the teachers' soft-label diversity) go to OUT/results.json and results.md.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from icckd_cli.config import DataOptions, DistillConfig, TrainTeacherConfig, read_toml
from icckd_cli.errors import UsageError, suggest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Callback = Callable[[str, dict[str, Any]], None]
TABLES = ("experiment", "teacher", "teachers", "student", "students")
# Settings every run of an experiment shares: they live in [experiment] only.
SHARED = (*DataOptions.model_fields, "device")
# Settings the experiment sets per run.
MANAGED = {
    "seed": "use seeds = [...] in [experiment]",
    "out": "runs go under out of [experiment]",
    "overwrite": "delete a run folder to redo it",
    "teacher": "every student distills from every [[teachers]] entry",
    "teacher_arch": "the teachers record their architecture",
}
# Execution details that may change between invocations without invalidating a finished run.
IGNORED_ON_REUSE = set(
    "device overwrite download save_every eval_batch_size out teacher data_dir precision "
    "compile channels_last".split()
)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
DIVERSITY_KEYS = ("ratio", "feature_ratio", "target_prob")
DIVERSITY_FILE = "diversity.json"


class ExperimentOptions(DataOptions):
    """The [experiment] table: the data every run shares, the seeds and the output folder."""

    name: str = "experiment"
    out: Path = Path("experiment")
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    device: str = "auto"
    temperature: float = Field(4.0, gt=0)  # T of the soft-label diversity columns

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct whole numbers >= 0, e.g. [0, 1, 2]")
        return seeds


@dataclass
class Teacher:
    """One [[teachers]] entry, resolved."""

    name: str
    config: TrainTeacherConfig  # seed and out are filled in per run

    @property
    def cross_entropy(self) -> bool:
        """A teacher without the intra-class term is the cross-entropy baseline."""
        return self.config.icc_weight == 0


@dataclass
class Student:
    """One [[students]] entry, resolved."""

    name: str
    config: DistillConfig  # teacher, seed and out are filled in per run


@dataclass
class Run:
    """One cell of the matrix: an ordinary run in its own folder."""

    kind: str  # teacher, student or baseline
    label: str  # its folder under OUT, e.g. students/icc/kd/seed1
    seed: int
    config: TrainTeacherConfig | DistillConfig
    teacher: str | None = None
    student: str | None = None

    @property
    def out(self) -> Path:
        """The run folder."""
        return Path(self.config.out)

    def status(self) -> str:
        """done (model saved), partial (resumable state saved) or new."""
        from icckd_cli.rundir import MODEL_FILE, STATE_FILE

        if (self.out / MODEL_FILE).exists():
            return "done"
        return "partial" if (self.out / STATE_FILE).exists() else "new"


@dataclass
class Experiment:
    """A validated experiment file."""

    options: ExperimentOptions
    teachers: list[Teacher]
    students: list[Student]
    baseline: TrainTeacherConfig | None
    source: str = "experiment"
    command: str = "icckd experiment"
    runs: list[Run] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.runs = plan(self)

    def teacher_runs(self, name: str) -> dict[int, Run]:
        """The runs of one teacher by seed."""
        return {r.seed: r for r in self.runs if r.kind == "teacher" and r.teacher == name}


# ----------------------------------------------------------------------------- validation


def load_experiment(path: Path, overrides: Mapping[str, Any] | None = None) -> Experiment:
    """Read and validate an experiment file; overrides (out, device) replace [experiment]."""
    if not Path(path).is_file():
        raise UsageError(
            f"experiment file {path} does not exist; check the path (examples/ holds "
            "ready-made ones)"
        )
    exp = parse_experiment(read_toml(Path(path)), str(path), overrides)
    exp.command = f"icckd experiment {path}"
    return exp


def parse_experiment(
    raw: dict[str, Any], source: str, overrides: Mapping[str, Any] | None = None
) -> Experiment:
    """Validate the whole experiment before any work starts; one-line errors name the table."""
    for key in raw:
        if key not in TABLES:
            hint = suggest(key, TABLES) or f" The tables are: {', '.join(TABLES)}."
            raise UsageError(f"{source}: unknown table [{key}].{hint}")
    exp_raw = _table(raw, "experiment", source)
    exp_raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    options = _validate(ExperimentOptions, exp_raw, {}, source, "[experiment]", "[experiment]")
    shared = {k: getattr(options, k) for k in SHARED}
    teachers = [Teacher(*e) for e in _section(raw, "teacher", TrainTeacherConfig, shared, source)]
    if not teachers:
        raise UsageError(
            f'{source}: no teachers; add [[teachers]] entries, e.g. name = "ce" with '
            'icc_weight = 0 and name = "icc" with icc_weight = 0.05'
        )
    raw = {**raw, "student": _table(raw, "student", source)}
    baseline_wanted = raw["student"].pop("baseline", False)
    if not isinstance(baseline_wanted, bool):
        raise UsageError(f"{source}: [student]: baseline must be true or false")
    students = [Student(*e) for e in _section(raw, "student", DistillConfig, shared, source)]
    baseline = None
    if baseline_wanted:
        values = {**shared, **raw["student"]}
        recipe = _validate(DistillConfig, values, {}, source, "[student]", "")
        # the student's data, optimiser and run settings, without any distillation term
        common = [k for k in TrainTeacherConfig.model_fields if k in DistillConfig.model_fields]
        baseline = TrainTeacherConfig(**{k: getattr(recipe, k) for k in common}, icc_weight=0.0)
    return Experiment(options, teachers, students, baseline, source)


def _section(
    raw: dict[str, Any], key: str, model: type[BaseModel], shared: dict[str, Any], source: str
) -> list[tuple[str, Any]]:
    """(name, config) of each [[<key>s]] entry over the [<key>] table over the defaults."""
    allowed = [k for k in model.model_fields if k not in SHARED and k not in MANAGED]
    common = _table(raw, key, source)
    _check_keys(common, allowed, source, f"[{key}]")
    out = []
    for i, entry in enumerate(_entries(raw, f"{key}s", source)):
        if key == "student":  # a student is named after its method unless named
            entry = {"name": entry.get("method", common.get("method", "kd")), **entry}
        name, where = _entry_name(entry, f"{key}s", i, source)
        _check_keys(entry, allowed, source, where, ("name",))
        values = {**shared, **common, **{k: v for k, v in entry.items() if k != "name"}}
        out.append((name, _validate(model, values, entry, source, where, f"[{key}]")))
    _unique([name for name, _ in out], source, f"[[{key}s]]")
    return out


def _table(raw: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise UsageError(f"{source}: [{key}] must be a table of settings (a [{key}] header)")
    return dict(value)


def _entries(raw: dict[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise UsageError(
            f"{source}: write one [[{key}]] header per entry (an array of tables), not [{key}]"
        )
    return [dict(v) for v in value]


def _entry_name(entry: dict[str, Any], key: str, i: int, source: str) -> tuple[str, str]:
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        example = "icc" if key == "teachers" else "kd"
        raise UsageError(
            f"{source}: [[{key}]] entry {i + 1} needs a name of letters, digits, '_', '-', "
            f"'+' or '.' (it names its folder), e.g. name = \"{example}\""
        )
    return name, f"[[{key}]] '{name}'"


def _check_keys(
    values: dict[str, Any], allowed: list[str], source: str, where: str, extra: tuple = ()
) -> None:
    for key in values:
        if key in allowed or key in extra:
            continue
        if key in SHARED:
            raise UsageError(
                f"{source}: {where}: '{key}' belongs in [experiment] (every run of an experiment "
                "uses the same data and device)"
            )
        if key in MANAGED:
            raise UsageError(f"{source}: {where}: '{key}' is set by the experiment; {MANAGED[key]}")
        hint = suggest(key, [*allowed, *extra]) or " Check the spelling."
        raise UsageError(f"{source}: {where}: unknown key '{key}'.{hint}")


def _validate(
    model: type, values: dict[str, Any], entry: dict[str, Any], source: str, where: str, shared: str
) -> Any:
    """model(**values), or a one-line error naming the table the bad value came from."""
    try:
        cfg = model(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        if not loc:
            raise UsageError(f"{source}: {where}: {msg}") from None
        key = loc[0]
        table = where if key in entry or not shared else shared
        if key in SHARED and model is not ExperimentOptions:
            table = "[experiment]"
        shown = f" = {values[key]!r}" if key in values else ""
        raise UsageError(f"{source}: {table}: invalid {key}{shown}: {msg}") from None
    if "arch" in getattr(model, "model_fields", {}):
        from icckd_cli.models import resolve_name

        try:
            resolve_name(cfg.arch)
        except UsageError as exc:
            raise UsageError(f"{source}: {where}: {exc.message}") from None
    return cfg


def _unique(names: list[str], source: str, where: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"{source}: {where}: the name '{dup[0]}' is used twice; names must differ")


# ----------------------------------------------------------------------------- the matrix


def plan(exp: Experiment) -> list[Run]:
    """Every run in order: per seed the teachers, then their students, then the baseline."""
    root = Path(exp.options.out)
    runs = []
    for seed in exp.options.seeds:
        for t in exp.teachers:
            label = f"teachers/{t.name}/seed{seed}"
            cfg = t.config.model_copy(update={"seed": seed, "out": root / label})
            runs.append(Run("teacher", label, seed, cfg, teacher=t.name))
        for t in exp.teachers:
            weights = root / f"teachers/{t.name}/seed{seed}/model.safetensors"
            for s in exp.students:
                label = f"students/{t.name}/{s.name}/seed{seed}"
                update = {"seed": seed, "out": root / label, "teacher": weights}
                student = s.config.model_copy(update=update)
                runs.append(Run("student", label, seed, student, teacher=t.name, student=s.name))
        if exp.baseline is not None:
            label = f"baseline/seed{seed}"
            cfg = exp.baseline.model_copy(update={"seed": seed, "out": root / label})
            runs.append(Run("baseline", label, seed, cfg))
    return runs


def check_reusable(run: Run) -> None:
    """A finished or partial run must have been made with the settings asked for now."""
    from icckd_cli.rundir import CONFIG_FILE
    from icckd_cli.runs import resolved_config

    saved_file = run.out / CONFIG_FILE
    if run.status() == "new" or not saved_file.is_file():
        return
    saved = json.loads(saved_file.read_text())
    wanted = json.loads(json.dumps(resolved_config(run.config)))
    for key, value in wanted.items():
        if key not in IGNORED_ON_REUSE and saved.get(key, value) != value:
            raise UsageError(
                f"{run.out} was run with {key} = {saved.get(key)!r} but the experiment now asks "
                f"for {value!r}; delete that folder to redo it, or choose another out"
            )


def check_student_teacher(run: Run, cache: dict[Path, str]) -> None:
    """A finished student must come from the teacher now in its teacher's folder."""
    from icckd_cli.checkpoint import load_tensors, read_metadata, weights_hash
    from icckd_cli.rundir import MODEL_FILE

    recorded = (read_metadata(run.out / MODEL_FILE).get("teacher") or {}).get("sha256")
    assert isinstance(run.config, DistillConfig) and run.config.teacher is not None
    teacher = Path(run.config.teacher)
    if teacher not in cache:
        cache[teacher] = weights_hash(load_tensors(teacher))
    if recorded and recorded != cache[teacher]:
        raise UsageError(
            f"{run.out} was distilled from other weights than {teacher} (the teacher was "
            "retrained); delete the student folder to redo it"
        )


def run_experiment(exp: Experiment, callback: Callback) -> dict[str, Any]:
    """Do every run not finished yet, then measure the teachers and write the results."""
    from icckd_cli import distributed as dist
    from icckd_cli import runs as runner
    from icckd_cli.errors import IcckdError

    for run in exp.runs:
        check_reusable(run)
    total = len(exp.runs)
    callback("plan", {"total": total, "done": sum(r.status() == "done" for r in exp.runs)})
    hashes: dict[Path, str] = {}
    for i, run in enumerate(exp.runs, 1):
        status = run.status()
        info = {"index": i, "total": total, "label": run.label, "kind": run.kind}
        if status == "done":
            if run.kind == "student":
                check_student_teacher(run, hashes)
            callback("run", {**info, "action": "skip"})
            continue
        callback("run", {**info, "action": "resume" if status == "partial" else "train"})
        train = runner.distill if run.kind == "student" else runner.train_teacher
        try:
            result = train(run.config, callback, resume=status == "partial")  # type: ignore[arg-type]
        except IcckdError as exc:
            raise type(exc)(f"run {run.label}: {exc.message}") from None
        callback(
            "run_end",
            {**info, "final": result.final, "best": result.best, "elapsed": result.elapsed},
        )
    if not dist.is_main():  # under torchrun process 0 alone measures and writes the results
        return {}
    diversity = measure_diversity(exp, callback)
    results = collect(exp, diversity)
    write_results(exp, results)
    callback("finish", {"out": str(exp.options.out)})
    return results


def measure_diversity(exp: Experiment, callback: Callback) -> dict[str, dict[int, dict]]:
    """Soft-label statistics of every finished teacher on the test split, cached per run."""
    from icckd_cli.config import InspectConfig
    from icckd_cli.inspect import inspect_checkpoints
    from icckd_cli.rundir import MODEL_FILE

    temperature = exp.options.temperature
    found: dict[str, dict[int, dict]] = {t.name: {} for t in exp.teachers}
    todo: list[Run] = []
    for run in (r for r in exp.runs if r.kind == "teacher" and r.status() == "done"):
        stamp = (run.out / MODEL_FILE).stat().st_mtime_ns
        cached = _read_json(run.out / DIVERSITY_FILE)
        if cached.get("temperature") == temperature and cached.get("model_mtime_ns") == stamp:
            found[run.teacher][run.seed] = cached["overall"]  # type: ignore[index]
        else:
            todo.append(run)
    if todo:
        callback("diversity", {"count": len(todo)})
        cfg = InspectConfig.model_validate(
            {
                "checkpoints": [r.out / MODEL_FILE for r in todo],
                "temperature": temperature,
                "device": exp.options.device,
                "download": exp.options.download,
            }
        )
        for run, res in zip(todo, inspect_checkpoints(cfg), strict=True):
            overall = {k: _finite(v) for k, v in res.stats.overall.items()}
            stamp = (run.out / MODEL_FILE).stat().st_mtime_ns
            record = {
                "temperature": temperature,
                "split": "test",
                "model_mtime_ns": stamp,
                "overall": overall,
            }
            _write_json(run.out / DIVERSITY_FILE, record)
            found[run.teacher][run.seed] = overall  # type: ignore[index]
    return found


# ----------------------------------------------------------------------------- aggregation


def aggregate(values: Mapping[int, float | None], seeds: int) -> dict[str, Any]:
    """Mean and sample std (n - 1) over the seeds present; n counts them, of `seeds`."""
    present = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
    xs = list(present.values())
    return {
        "mean": statistics.fmean(xs) if xs else None,
        "std": statistics.stdev(xs) if len(xs) > 1 else None,
        "n": len(xs),
        "seeds": seeds,
        "values": {str(k): v for k, v in sorted(present.items())},
    }


def paired_difference(
    a: Mapping[int, float | None], b: Mapping[int, float | None]
) -> dict[int, float]:
    """a - b for every seed where both are present (students share their seed's data order)."""
    return {k: a[k] - b[k] for k in a if k in b and a[k] is not None and b[k] is not None}  # type: ignore[operator]


def cell(agg: Mapping[str, Any], digits: int = 2, signed: bool = False) -> str:
    """'97.22 ± 0.39'; one seed: '97.22 ± -'; missing seeds counted; none: 'n/a (0/2 seeds)'."""
    n, seeds = agg["n"], agg["seeds"]
    if n == 0:
        return f"n/a (0/{seeds} seeds)"
    sign = "+" if signed else ""
    text = f"{agg['mean']:{sign}.{digits}f} ± "
    text += "-" if agg["std"] is None else f"{agg['std']:.{digits}f}"
    return text if n == seeds else f"{text} ({n}/{seeds} seeds)"


def _metric(run: Run, which: str) -> float | None:
    from icckd_cli.checkpoint import read_metadata
    from icckd_cli.rundir import MODEL_FILE

    if run.status() != "done":
        return None
    metrics = read_metadata(run.out / MODEL_FILE).get("metrics") or {}
    return (metrics.get(which) or {}).get("top1")


def _objective(cfg: TrainTeacherConfig) -> str:
    if cfg.icc_weight == 0:
        return "cross-entropy"
    gate = "no gate" if cfg.margin <= -1 else f"margin {cfg.margin:g}"
    return (
        f"CE + {cfg.icc_weight:g} L_intra ({gate}, tau {cfg.icc_temperature:g}, K {cfg.queue_size})"
    )


def _top1(runs: Mapping[int, Run]) -> dict[str, dict[int, float | None]]:
    """top-1 at the last ('final') and at the best epoch, by seed; None where not done."""
    return {w: {k: _metric(r, w) for k, r in runs.items()} for w in ("final", "best")}


def _last_best(top1: Mapping[str, Mapping[int, float | None]], n: int) -> dict[str, Any]:
    return {"last": aggregate(top1["final"], n), "best": aggregate(top1["best"], n)}


def collect(exp: Experiment, diversity: Mapping[str, Mapping[int, dict]]) -> dict[str, Any]:
    """Everything the tables show, as JSON-ready numbers."""
    o, n = exp.options, len(exp.options.seeds)
    teachers = []
    for t in exp.teachers:
        div = diversity.get(t.name, {})
        teachers.append(
            dict(name=t.name, arch=t.config.arch, objective=_objective(t.config),
                 icc_weight=t.config.icc_weight, cross_entropy=t.cross_entropy,
                 top1=aggregate(_top1(exp.teacher_runs(t.name))["final"], n),
                 diversity={key: aggregate({k: d.get(key) for k, d in div.items()}, n)
                            for key in DIVERSITY_KEYS})
        )  # fmt: skip
    students, differences = [], []
    reference = next((t for t in exp.teachers if t.cross_entropy), None)
    for s in exp.students:
        top1 = {}
        for t in exp.teachers:
            runs = {r.seed: r for r in exp.runs if (r.teacher, r.student) == (t.name, s.name)}
            top1[t.name] = _top1(runs)
            about = dict(student=s.name, method=s.config.method, arch=s.config.arch)
            students.append({**about, "teacher": t.name, **_last_best(top1[t.name], n)})
        for t in exp.teachers:
            if reference is None or t.cross_entropy:
                continue
            ours, ref = top1[t.name], top1[reference.name]
            diff = {w: paired_difference(ours[w], ref[w]) for w in ours}
            pair = dict(student=s.name, method=s.config.method, teacher=t.name)
            differences.append({**pair, "reference": reference.name, **_last_best(diff, n)})
    baseline = None
    if exp.baseline is not None:
        runs = {r.seed: r for r in exp.runs if r.kind == "baseline"}
        baseline = {"arch": exp.baseline.arch, **_last_best(_top1(runs), n)}
    return dict(name=o.name, dataset=o.dataset, train_per_class=o.train_per_class,
                test_per_class=o.test_per_class, seeds=list(o.seeds), out=str(o.out),
                temperature=o.temperature, command=exp.command, teachers=teachers,
                students=students, differences=differences, baseline=baseline)  # fmt: skip


@dataclass
class TableSpec:
    """A table as plain strings, rendered by rich on the terminal and as Markdown on disk."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def result_tables(results: Mapping[str, Any]) -> list[TableSpec]:
    """The teachers', their soft labels' and the students' tables of an experiment."""
    seeds = len(results["seeds"])
    over = f"mean ± std over {seeds} seed{'s' if seeds > 1 else ''}"
    teachers = results["teachers"]
    tables = [
        TableSpec(
            f"teachers on {results['dataset']} (top-1 %, {over})",
            ["teacher", "arch", "objective", "top-1 (last epoch)"],
            [[t["name"], t["arch"], t["objective"], cell(t["top1"])] for t in teachers],
        ),
        TableSpec(
            f"soft-label diversity of the teachers (test split, T = {results['temperature']:g})",
            ["teacher", "intra/inter (soft labels)", "intra/inter (features)", "mean p(target)"],
            [[t["name"], *(cell(t["diversity"][k], 4) for k in DIVERSITY_KEYS)] for t in teachers],
            ["intra/inter: mean intra-class distance over mean distance between class centroids"],
        ),
    ]
    rows = []
    for name in dict.fromkeys(r["student"] for r in results["students"]):
        for r in (r for r in results["students"] if r["student"] == name):
            shown = name if name == r["method"] else f"{name} ({r['method']})"
            rows.append([shown, r["arch"], r["teacher"], cell(r["last"]), cell(r["best"])])
        for d in (d for d in results["differences"] if d["student"] == name):
            diff = f"{d['teacher']} minus {d['reference']}"
            rows.append(["", "", diff, cell(d["last"], signed=True), cell(d["best"], signed=True)])
    if results["baseline"] is not None:
        b = results["baseline"]
        rows.append(["alone (CE)", b["arch"], "none", cell(b["last"]), cell(b["best"])])
    notes = [
        "'minus' rows: the paired difference per seed (student seed k from teacher seed k)",
        "best epoch is picked on the test split itself, so it flatters; last epoch is the "
        "honest number",
    ]
    if rows:
        title = f"students on {results['dataset']} (top-1 %, {over})"
        columns = ["student", "arch", "teacher", "last epoch", "best epoch"]
        tables.append(TableSpec(title, columns, rows, notes))
    return tables


def results_markdown(results: Mapping[str, Any]) -> str:
    """The tables as Markdown, with what was run."""
    subset = ", ".join(
        f"{k.replace('_', ' ')} {results[k]}"
        for k in ("train_per_class", "test_per_class")
        if results[k]
    )
    lines = [
        f"# {results['name']}",
        "",
        f"Data set {results['dataset']}{f' ({subset})' if subset else ''}, seeds "
        f"{', '.join(map(str, results['seeds']))}; runs under `{results['out']}`. Made by "
        f"`{results['command']}`.",
        "",
    ]
    for t in result_tables(results):
        lines += [
            f"## {t.title}",
            "",
            "| " + " | ".join(t.columns) + " |",
            "|" + "---|" * len(t.columns),
        ]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t.rows]
        lines += ["", *[f"- {n}" for n in t.notes], *([""] if t.notes else [])]
    return "\n".join(lines)


def write_results(exp: Experiment, results: Mapping[str, Any]) -> None:
    """OUT/results.json and OUT/results.md."""
    from icckd_cli.checkpoint import write_text_atomic

    root = Path(exp.options.out)
    write_text_atomic(root / "results.json", json.dumps(results, indent=2) + "\n")
    write_text_atomic(root / "results.md", results_markdown(results))


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, obj: Any) -> None:
    from icckd_cli.checkpoint import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


# ----------------------------------------------------------------------------- quickstart

# The same text as examples/quickstart.toml (a test keeps them equal); embedded so that
# `icckd quickstart` works from an installed package without the repository.
QUICKSTART_TOML = """\
# The built-in experiment of `icckd quickstart`, the paper's comparison in miniature on the
# embedded digits data set (no download): two resnet8 teachers, one trained with
# cross-entropy alone and one with the intra-class contrastive term, a KD student from
# each, the student trained alone as a baseline, two seeds. A few minutes on 2 CPU cores.
#
#     icckd quickstart                              (this file is built in)
#     icckd experiment examples/quickstart.toml     (the same, from the file)
#
# Runs go under ./icckd-quickstart/; running the command again skips finished runs.

[experiment]
name = "quickstart"
dataset = "digits"
seeds = [0, 1]
out = "icckd-quickstart"

[teacher]
arch = "resnet8"
epochs = 10

[[teachers]]
name = "ce"
icc_weight = 0

[[teachers]]
name = "icc"
icc_weight = 0.1
margin = 0.5

[student]
arch = "resnet8"
epochs = 10
baseline = true

[[students]]
name = "kd"
method = "kd"
"""


def quickstart_experiment(overrides: Mapping[str, Any] | None = None) -> Experiment:
    """The built-in experiment on digits."""
    exp = parse_experiment(tomllib.loads(QUICKSTART_TOML), "quickstart", overrides)
    exp.command = "icckd quickstart"
    return exp
