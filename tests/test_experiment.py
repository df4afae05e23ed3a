"""`icckd experiment` and `quickstart`: validation, aggregation, resuming the matrix."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from icckd_cli import experiment as ex
from icckd_cli.config import read_toml
from icckd_cli.engine import Interrupted
from icckd_cli.errors import UsageError
from icckd_cli.experiment import results as res
from tests.helpers import icckd

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))

TINY = """\
[experiment]
name = "tiny"
dataset = "digits"
train_per_class = 20
test_per_class = 5
seeds = [0, 1]
out = "{out}"
device = "cpu"

[teacher]
arch = "resnet8"  # teacher
epochs = 1  # teacher
batch_size = 16

[[teachers]]
name = "ce"
icc_weight = 0

[[teachers]]
name = "icc"
icc_weight = 0.1
margin = -1
queue_size = 8

[student]
arch = "resnet8"
epochs = 1  # student
batch_size = 16
baseline = true

[[students]]
method = "kd"
"""


def _parse(text: str, source: str = "x.toml") -> ex.Experiment:
    return ex.parse_experiment(tomllib.loads(text), source)


def _tiny(tmp_path: Path, *replace: tuple[str, str]) -> str:
    text = TINY.format(out=tmp_path / "exp")
    for old, new in replace:
        assert old in text
        text = text.replace(old, new)
    return text


# ----------------------------------------------------------------------------- aggregation


def test_aggregate_mean_and_sample_std() -> None:
    agg = ex.aggregate({0: 1.0, 1: 2.0, 2: 4.0}, 3)
    assert agg["mean"] == pytest.approx(7 / 3)
    # sample std (n - 1): sum of squares 42/9 over 2
    assert agg["std"] == pytest.approx(math.sqrt(7 / 3))
    assert agg["n"] == 3 and agg["seeds"] == 3
    assert agg["values"] == {"0": 1.0, "1": 2.0, "2": 4.0}
    assert ex.cell(agg) == "2.33 ± 1.53"


def test_one_seed_has_no_std() -> None:
    agg = ex.aggregate({0: 97.2222}, 1)
    assert agg["std"] is None
    assert ex.cell(agg) == "97.22 ± -"


def test_missing_runs_are_shown_as_missing_never_as_zero() -> None:
    some = ex.aggregate({0: 90.0, 1: None, 2: float("nan")}, 3)
    assert some["n"] == 1 and some["mean"] == 90.0 and some["std"] is None
    assert ex.cell(some) == "90.00 ± - (1/3 seeds)"
    none = ex.aggregate({0: None, 1: None}, 2)
    assert none["mean"] is None and none["n"] == 0
    assert ex.cell(none) == "n/a (0/2 seeds)"
    assert ex.cell(ex.aggregate({}, 2), signed=True) == "n/a (0/2 seeds)"


def test_paired_difference_is_per_seed_and_skips_missing_seeds() -> None:
    icc = {0: 92.0, 1: 94.0, 2: 95.0, 3: None}
    ce = {0: 91.0, 1: 91.5, 3: 90.0}
    diff = ex.paired_difference(icc, ce)
    assert diff == {0: 1.0, 1: 2.5}
    agg = ex.aggregate(diff, 4)
    assert ex.cell(agg, signed=True) == f"+1.75 ± {math.sqrt(2 * 0.75**2):.2f} (2/4 seeds)"
    assert ex.cell(ex.aggregate({0: -0.5}, 1), signed=True) == "-0.50 ± -"


def test_collect_builds_every_cell_and_the_icc_minus_ce_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = _parse(_tiny(tmp_path))
    top1 = {
        "teachers/ce/seed0": 95.0, "teachers/ce/seed1": 96.0,
        "teachers/icc/seed0": 94.0, "teachers/icc/seed1": 95.0,
        "students/ce/kd/seed0": 90.0, "students/ce/kd/seed1": 91.0,
        "students/icc/kd/seed0": 92.0,  # seed 1 of this student is missing
        "baseline/seed0": 88.0, "baseline/seed1": 89.0,
    }  # fmt: skip

    def fake_metric(run: ex.Run, which: str) -> float | None:
        value = top1.get(run.label)  # best epoch: 0.5 above the last one
        return None if value is None else value + (0.5 if which == "best" else 0.0)

    monkeypatch.setattr(res, "_metric", fake_metric)  # where collect looks it up
    diversity = {"ce": {0: {"ratio": 0.1, "feature_ratio": 0.3, "target_prob": 0.9}},
                 "icc": {0: {"ratio": 0.2, "feature_ratio": 0.4, "target_prob": 0.8},
                         1: {"ratio": 0.4, "feature_ratio": 0.5, "target_prob": 0.7}}}  # fmt: skip
    results = ex.collect(exp, diversity)
    ce, icc = results["teachers"]
    assert ce["cross_entropy"] and not icc["cross_entropy"]
    assert ce["top1"]["mean"] == 95.5 and icc["top1"]["mean"] == 94.5
    assert ce["diversity"]["ratio"]["n"] == 1 and icc["diversity"]["ratio"][
        "mean"
    ] == pytest.approx(0.3)
    by_teacher = {s["teacher"]: s for s in results["students"]}
    assert by_teacher["ce"]["last"]["mean"] == 90.5 and by_teacher["ce"]["best"]["mean"] == 91.0
    assert by_teacher["icc"]["last"]["n"] == 1
    (diff,) = results["differences"]
    assert (diff["teacher"], diff["reference"]) == ("icc", "ce")
    assert diff["last"]["values"] == {"0": 2.0} and diff["last"]["n"] == 1
    assert results["baseline"]["last"]["mean"] == 88.5

    tables = ex.result_tables(results)
    students = tables[-1]
    rows = {tuple(r[:3]): r[3:] for r in students.rows}
    assert rows[("kd", "resnet8", "icc")] == ["92.00 ± - (1/2 seeds)", "92.50 ± - (1/2 seeds)"]
    assert rows[("", "", "icc minus ce")] == ["+2.00 ± - (1/2 seeds)", "+2.00 ± - (1/2 seeds)"]
    assert rows[("alone (CE)", "resnet8", "none")] == ["88.50 ± 0.71", "89.00 ± 0.71"]
    markdown = ex.results_markdown(results)
    assert (
        "| teacher | intra/inter (soft labels) | intra/inter (features) | mean p(target) |"
        in markdown
    )
    assert (
        "| ce | 0.1000 ± - (1/2 seeds) | 0.3000 ± - (1/2 seeds) | 0.9000 ± - (1/2 seeds) |"
        in markdown
    )
    assert "|  |  | icc minus ce | +2.00 ± - (1/2 seeds) | +2.00 ± - (1/2 seeds) |" in markdown


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (("[student]", "[studnet]"),
         "x.toml: unknown table [studnet]. Did you mean: student, students?"),
        (("icc_weight = 0.1", "icc_wieght = 0.1"),
         "x.toml: [[teachers]] 'icc': unknown key 'icc_wieght'. Did you mean: icc_weight?"),
        (("baseline = true", "baseline = true\nepoch = 3"),
         "x.toml: [student]: unknown key 'epoch'. Did you mean: epochs, lr_decay_epochs?"),
        (("[teacher]\n", "[teacher]\ndataset = \"cifar10\"\n"),
         "x.toml: [teacher]: 'dataset' belongs in [experiment] (every run of an experiment uses "
         "the same data and device)"),
        (("method = \"kd\"", "method = \"kd\"\nseed = 3"),
         "x.toml: [[students]] 'kd': 'seed' is set by the experiment; use seeds = [...] in "
         "[experiment]"),
        (("margin = -1", "margin = 1.5"),
         "x.toml: [[teachers]] 'icc': invalid margin = 1.5: Input should be less than 1"),
        (("epochs = 1  # student", "epochs = 0"),
         "x.toml: [student]: invalid epochs = 0: Input should be greater than or equal to 1"),
        (("method = \"kd\"", "method = \"kdd\""),
         "x.toml: [[students]] 'kdd': invalid method = 'kdd': Input should be 'kd', 'rkd', "
         "'kd+rkd', 'dkd' or 'crd'"),
        (("seeds = [0, 1]", "seeds = [0, 0]"),
         "x.toml: [experiment]: invalid seeds = [0, 0]: seeds must be distinct whole numbers "
         ">= 0, e.g. [0, 1, 2]"),
        (("name = \"icc\"", "name = \"ce\""),
         "x.toml: [[teachers]]: the name 'ce' is used twice; names must differ"),
        (("name = \"icc\"", "name = \"i c c\""),
         "x.toml: [[teachers]] entry 2 needs a name of letters, digits, '_', '-', '+' or '.' "
         "(it names its folder), e.g. name = \"icc\""),
        (("arch = \"resnet8\"  # teacher", "arch = \"resnet9\""),
         "x.toml: [[teachers]] 'ce': unknown architecture 'resnet9'. Did you mean: resnet8, "
         "resnet56, ResNet50? Run 'icckd models' to list them."),
        (("baseline = true", "baseline = 1"),
         "x.toml: [student]: baseline must be true or false"),
    ],
)  # fmt: skip
def test_bad_experiment_files_fail_with_one_line_naming_the_table(
    tmp_path: Path, replace: tuple[str, str], message: str
) -> None:
    with pytest.raises(UsageError) as err:
        _parse(_tiny(tmp_path, replace))
    assert err.value.message == message
    assert "\n" not in err.value.message


def test_teachers_must_be_an_array_of_tables_and_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"write one \[\[teachers\]\] header per entry"):
        _parse('[teachers]\nname = "ce"\n')
    with pytest.raises(UsageError, match="x.toml: no teachers; add"):
        _parse('[experiment]\ndataset = "digits"\n')


def test_cli_experiment_reports_a_missing_file_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    r = icckd(capsys, "experiment", tmp_path / "nope.toml")
    assert r.code == 2
    assert r.err.strip() == (
        f"error: experiment file {tmp_path / 'nope.toml'} does not exist; check the path "
        "(examples/ holds ready-made ones)"
    )


def test_shared_tables_and_entries_combine_in_that_order(tmp_path: Path) -> None:
    exp = _parse(_tiny(tmp_path, ('name = "ce"', 'name = "ce"\nepochs = 2')))
    ce, icc = exp.teachers
    assert (ce.config.epochs, icc.config.epochs) == (2, 1)  # the entry overrides [teacher]
    assert ce.cross_entropy and not icc.cross_entropy
    assert icc.config.margin == -1 and icc.config.queue_size == 8
    assert exp.students[0].name == "kd"  # a student's name defaults to its method
    # the baseline is the student's recipe trained alone with cross-entropy
    assert exp.baseline is not None and exp.baseline.icc_weight == 0
    assert (exp.baseline.arch, exp.baseline.epochs, exp.baseline.batch_size) == ("resnet8", 1, 16)
    labels = [r.label for r in exp.runs]
    assert labels == [
        "teachers/ce/seed0", "teachers/icc/seed0", "students/ce/kd/seed0", "students/icc/kd/seed0",
        "baseline/seed0", "teachers/ce/seed1", "teachers/icc/seed1", "students/ce/kd/seed1",
        "students/icc/kd/seed1", "baseline/seed1",
    ]  # fmt: skip
    student = exp.runs[3]
    assert student.config.teacher == tmp_path / "exp/teachers/icc/seed0/model.safetensors"
    assert student.config.seed == 0 and student.config.dataset == "digits"
    assert student.config.train_per_class == 20 and student.config.device == "cpu"


# ----------------------------------------------------------------------------- examples


def test_quickstart_text_is_the_example_file() -> None:
    assert ex.QUICKSTART_TOML == (ROOT / "examples" / "quickstart.toml").read_text()
    exp = ex.quickstart_experiment()
    assert exp.options.dataset == "digits" and len(exp.options.seeds) >= 2
    assert [t.cross_entropy for t in exp.teachers] == [True, False]
    assert [s.config.method for s in exp.students] == ["kd"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_validates(path: Path) -> None:
    exp = ex.load_experiment(path)
    assert any(t.cross_entropy for t in exp.teachers)
    assert any(not t.cross_entropy for t in exp.teachers)
    if path.stem.startswith("cifar100"):
        assert exp.options.seeds == [0, 1, 2]
        assert {s.config.method for s in exp.students} == {"kd", "kd+rkd"}
        for cfg in [*(t.config for t in exp.teachers), *(s.config for s in exp.students)]:
            assert (cfg.epochs, cfg.batch_size, cfg.lr) == (240, 64, 0.05)
            assert cfg.resolved_decay() == [150, 180, 210]


def test_six_standard_cifar100_pairs_are_there() -> None:
    pairs = set()
    for path in EXAMPLES:
        if path.stem.startswith("cifar100"):
            raw = read_toml(path)
            pairs.add((raw["teacher"]["arch"], raw["student"]["arch"]))
    assert pairs == {("resnet56", "resnet20"), ("resnet110", "resnet32"),
                     ("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"),
                     ("wrn_40_2", "wrn_40_1"), ("vgg13", "vgg8")}  # fmt: skip


# ----------------------------------------------------------------------------- end to end


def _models(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("model.safetensors")}


@pytest.mark.slow
def test_interrupted_experiment_resumes_and_a_finished_one_redoes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(_tiny(tmp_path))
    out = tmp_path / "exp"
    exp = ex.load_experiment(config)
    events: list[tuple[str, dict[str, Any]]] = []

    def ctrl_c_in_third_run(event: str, info: dict[str, Any]) -> None:
        events.append((event, info))
        runs = [i for e, i in events if e == "run"]
        if event == "step" and runs[-1]["index"] == 3 and info["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does, seen by the run's handler

    with pytest.raises(Interrupted):
        ex.run_experiment(exp, ctrl_c_in_third_run)
    assert (out / "teachers/icc/seed0/model.safetensors").is_file()
    assert (out / "students/ce/kd/seed0/state.safetensors").is_file()
    assert not (out / "students/ce/kd/seed0/model.safetensors").exists()
    assert [r.status() for r in exp.runs][:4] == ["done", "done", "partial", "new"]

    r = icckd(capsys, "experiment", config, "--format", "json")
    assert r.code == 0, r.err
    assert "run 1/10: teachers/ce/seed0: finished already, skipped" in r.err
    assert "run 3/10: students/ce/kd/seed0: resuming" in r.err
    assert "run 4/10: students/icc/kd/seed0: training" in r.err
    results = r.json()
    assert results == json.loads((out / "results.json").read_text())
    cells = [t["top1"] for t in results["teachers"]]
    cells += [s[k] for s in results["students"] for k in ("last", "best")]
    cells += [results["baseline"]["last"], results["differences"][0]["last"]]
    assert all(c["n"] == 2 and c["std"] is not None for c in cells)
    assert all(0 <= c["mean"] <= 100 for c in cells[:-1])
    resumed = json.loads((out / "students/ce/kd/seed0/metrics.jsonl").read_text())
    assert resumed["epoch"] == 1
    for t in results["teachers"]:
        assert t["diversity"]["ratio"]["n"] == 2
    assert (
        "## students on digits (top-1 %, mean ± std over 2 seeds)"
        in (out / "results.md").read_text()
    )

    # a second invocation redoes nothing: every model file keeps its modification time
    before = _models(out)
    assert len(before) == 10
    r = icckd(capsys, "experiment", config)
    assert r.code == 0, r.err
    assert r.err.count("finished already, skipped") == 10
    assert "training" not in r.err and "soft-label diversity of" not in r.err
    assert _models(out) == before
    assert "icc minus ce" in r.out and "alone (CE)" in r.out

    # a lost run is redone alone
    (out / "students/icc/kd/seed1/model.safetensors").unlink()
    r = icckd(capsys, "experiment", config, "--dry-run")
    assert r.code == 0 and "students/icc/kd/seed1 │ new" in r.out
    r = icckd(capsys, "experiment", config)
    assert r.code == 0, r.err
    assert r.err.count(": training") == 1 and "run 9/10: students/icc/kd/seed1: training" in r.err
    after = _models(out)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {"students/icc/kd/seed1/model.safetensors"}

    # a changed recipe never silently reuses runs made with the old one
    config.write_text(_tiny(tmp_path, ("epochs = 1  # teacher", "epochs = 2")))
    r = icckd(capsys, "experiment", config)
    assert r.code == 2
    assert r.err.strip() == (
        f"error: {out / 'teachers/ce/seed0'} was run with epochs = 1 but the experiment now asks "
        "for 2; delete that folder to redo it, or choose another out"
    )


def test_cli_interrupt_exits_130_with_how_to_continue(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(exp: ex.Experiment, callback: Any) -> None:
        raise Interrupted()

    monkeypatch.setattr(ex, "run_experiment", interrupted)
    config = tmp_path / "tiny.toml"
    config.write_text(_tiny(tmp_path))
    r = icckd(capsys, "experiment", config)
    assert r.code == 130
    assert "run the same command again to continue" in r.err


def test_cli_quickstart_runs_the_built_in_experiment_into_out(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[ex.Experiment] = []

    def fake_run(exp: ex.Experiment, callback: Any) -> dict[str, Any]:
        seen.append(exp)
        return ex.collect(exp, {})  # nothing trained: every cell is missing

    monkeypatch.setattr(ex, "run_experiment", fake_run)
    r = icckd(capsys, "quickstart", "--out", str(tmp_path / "qs"), "--device", "cpu")
    assert r.code == 0, r.err
    (exp,) = seen
    assert exp.options.out == tmp_path / "qs" and exp.options.device == "cpu"
    assert exp.command == "icckd quickstart" and len(exp.runs) == 10
    assert exp.runs[0].out == tmp_path / "qs/teachers/ce/seed0"
    assert "n/a (0/2 seeds)" in r.out and "0.00" not in r.out
