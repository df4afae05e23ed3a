"""Running the matrix: resuming after Ctrl-C, skipping finished runs, refusing stale ones."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from icckd_cli.commands.experiment.config import load_experiment
from icckd_cli.commands.experiment.matrix import run_experiment
from icckd_cli.commands.experiment.plan import Experiment
from icckd_cli.training.engine import Interrupted
from tests.helpers import icckd, tiny_experiment


def _models(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("model.safetensors")}


@pytest.mark.slow
def test_interrupted_experiment_resumes_and_a_finished_one_redoes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_experiment(tmp_path))
    out = tmp_path / "exp"
    exp = load_experiment(config)
    events: list[tuple[str, dict[str, Any]]] = []

    def ctrl_c_in_third_run(event: str, info: dict[str, Any]) -> None:
        events.append((event, info))
        runs = [i for e, i in events if e == "run"]
        if event == "step" and runs[-1]["index"] == 3 and info["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does, seen by the run's handler

    with pytest.raises(Interrupted):
        run_experiment(exp, ctrl_c_in_third_run)
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
    # a learning-curve figure per group next to results.md, linked from it
    assert results["figures"] == [
        {"title": "teachers", "file": "curves_teachers.png"},
        {"title": "students: kd", "file": "curves_students_kd.png"},
    ]
    for figure in results["figures"]:
        assert f"![{figure['title']}]({figure['file']})" in (out / "results.md").read_text()
        assert (out / figure["file"]).read_bytes().startswith(b"\x89PNG")

    # a second invocation redoes nothing: every model file keeps its modification time
    before = _models(out)
    assert len(before) == 10
    r = icckd(capsys, "experiment", config)
    assert r.code == 0, r.err
    assert r.err.count("finished already, skipped") == 10
    assert "training" not in r.err and "soft-label diversity of" not in r.err
    assert _models(out) == before
    assert "icc minus ce" in r.out and "alone (CE)" in r.out
    assert f"wrote {out / 'curves_students_kd.png'}" in r.err

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
    config.write_text(tiny_experiment(tmp_path, ("epochs = 1  # teacher", "epochs = 2")))
    r = icckd(capsys, "experiment", config)
    assert r.code == 2
    assert r.err.strip() == (
        f"error: {out / 'teachers/ce/seed0'} was run with epochs = 1 but the experiment now asks "
        "for 2; delete that folder to redo it, or choose another out"
    )


def test_cli_interrupt_exits_130_with_how_to_continue(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(exp: Experiment, callback: Any, wait: bool = True) -> None:
        raise Interrupted()

    monkeypatch.setattr("icckd_cli.commands.experiment.matrix.run_experiment", interrupted)
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_experiment(tmp_path))
    r = icckd(capsys, "experiment", config)
    assert r.code == 130
    assert "run the same command again to continue" in r.err


def _reduced_ablation(tmp_path: Path) -> str:
    """examples/ablation-cifar10-cpu.toml with only its data, length and seeds made tiny."""
    text = (Path(__file__).parents[1] / "examples/ablation-cifar10-cpu.toml").read_text()
    for old, new in (
        ('dataset = "imagefolder"', 'dataset = "digits"\ndevice = "cpu"\ntest_per_class = 5'),
        ('data_dir = "/tmp/cifar10-jpeg"\n', ""),
        ("train_per_class = 200", "train_per_class = 12"),
        ("seeds = [0, 1, 2]", "seeds = [0, 1]"),
        ('out = "experiments/ablation-cifar10-cpu"', f'out = "{tmp_path / "abl"}"'),
        ("epochs = 10", "epochs = 1"),
        ("eval_every = 10", "eval_every = 1"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.mark.slow
def test_the_ablation_example_runs_end_to_end_and_resumes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "ablation.toml"
    config.write_text(_reduced_ablation(tmp_path))
    exp = load_experiment(config)
    assert [t.name for t in exp.teachers] == [
        "ce", "ls0.1", "icc-nogate", "icc-nocache", "icc0.05", "icc0.1"
    ]  # fmt: skip
    assert len(exp.runs) == 2 * (6 + 6 + 1)

    current: list[str] = []

    def ctrl_c_in_the_no_cache_teacher(event: str, info: dict[str, Any]) -> None:
        if event == "run":
            current.append(info["label"])
        if event == "step" and current[-1] == "teachers/icc-nocache/seed0" and info["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C inside the fourth teacher

    with pytest.raises(Interrupted):
        run_experiment(exp, ctrl_c_in_the_no_cache_teacher)
    r = icckd(capsys, "experiment", config, "--format", "json")
    assert r.code == 0, r.err
    assert "teachers/icc-nocache/seed0: resuming" in r.err
    results = r.json()
    objectives = [t["objective"] for t in results["teachers"]]
    assert objectives[:2] == ["cross-entropy", "CE (label smoothing 0.1)"]
    assert "no gate" in objectives[2] and "no cache" in objectives[3]
    # every variant minus ce, for the teachers and for their KD students, with intervals
    assert [d["teacher"] for d in results["teacher_differences"]] == [
        "ls0.1", "icc-nogate", "icc-nocache", "icc0.05", "icc0.1"
    ]  # fmt: skip
    assert [d["teacher"] for d in results["differences"]] == [
        d["teacher"] for d in results["teacher_differences"]
    ]
    for d in [*results["teacher_differences"], *results["differences"]]:
        lo, hi = d["last"]["ci95"]
        assert d["last"]["n"] == 2 and lo <= d["last"]["mean"] <= hi
        assert 0 <= d["last"]["positive"] <= 2


@pytest.mark.slow
def test_students_of_one_teacher_share_its_cache_written_by_the_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from icckd_cli.base.checkpoint import read_metadata

    config = tmp_path / "tiny.toml"
    one_seed = ("seeds = [0, 1]", "seeds = [0]")
    no_icc = ('name = "icc"\nicc_weight = 0.1\nmargin = -1\nqueue_size = 8\n', "")
    two = ('method = "kd"', 'method = "kd"\n\n[[students]]\nmethod = "crd"\ncrd_nce_k = 16')
    text = tiny_experiment(tmp_path, one_seed, no_icc, two, ("baseline = true", ""))
    config.write_text(text.replace("[[teachers]]\n\n", ""))
    r = icckd(capsys, "experiment", config, "--format", "json")
    assert r.code == 0, r.err
    cache = tmp_path / "exp/teacher_cache/ce/seed0"
    assert not (tmp_path / "exp/teacher_cache").exists()  # deleted once both students finished
    assert r.err.count("teacher cache: writing ") == 1  # by the first student, KD
    assert "run 2/3: students/ce/kd/seed0: teacher cache: writing" in r.err
    assert r.err.count(f"teacher cache: reading {cache}") == 2
    for method in ("kd", "crd"):
        meta = read_metadata(tmp_path / f"exp/students/ce/{method}/seed0/model.safetensors")
        assert meta["teacher"]["cache"] == {"path": str(cache), "dtype": "float16", "topk": None}
        assert (meta["config"]["seed"], meta["config"]["data_seed"]) == (0, 0)
    again = icckd(capsys, "experiment", config, "--format", "json")
    assert again.code == 0 and "teacher cache" not in again.err


VIT_EXPERIMENT = """\
[experiment]
name = "vit"
dataset = "digits"
train_per_class = 5
test_per_class = 2
seeds = [0]
out = "{out}"
device = "cpu"
latency = false
teacher_cache = false

[teacher]
epochs = 1
batch_size = 16

[[teachers]]
name = "ce"
arch = "resnet8"
icc_weight = 0

[student]
epochs = 1
batch_size = 16

[[students]]
method = "kd"
arch = "timm:vit_tiny_patch16_224"
model_args = {{patch_size = 4, embed_dim = 32, depth = 1, num_heads = 2}}
"""


@pytest.mark.slow
def test_an_experiment_with_a_timm_student_resumes_and_then_skips_every_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pytest.importorskip("timm")
    config = tmp_path / "vit.toml"
    out = tmp_path / "exp"
    config.write_text(VIT_EXPERIMENT.format(out=out))
    exp = load_experiment(config)
    assert [(r.label, r.config.arch) for r in exp.runs] == [
        ("teachers/ce/seed0", "resnet8"),
        ("students/ce/kd/seed0", "timm:vit_tiny_patch16_224"),
    ]
    seen: list[dict[str, Any]] = []

    def ctrl_c_in_the_student(event: str, info: dict[str, Any]) -> None:
        if event == "run":
            seen.append(info)
        if event == "step" and seen[-1]["kind"] == "student" and info["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        run_experiment(exp, ctrl_c_in_the_student)
    student = out / "students/ce/kd/seed0"
    # the run recorded the image size it filled in; the file asks for none
    assert json.loads((student / "config.json").read_text())["model_args"]["img_size"] == 32
    r = icckd(capsys, "experiment", config, "--dry-run")
    assert r.code == 0, r.err
    assert "teachers/ce/seed0    │ done" in r.out and "students/ce/kd/seed0 │ partial" in r.out
    r = icckd(capsys, "experiment", config, "--format", "json")
    assert r.code == 0, r.err
    assert "run 1/2: teachers/ce/seed0: finished already, skipped" in r.err
    assert "run 2/2: students/ce/kd/seed0: resuming" in r.err
    before = _models(out)
    r = icckd(capsys, "experiment", config, "--dry-run")
    assert r.code == 0 and r.out.count("│ done") == 2, r.out
    r = icckd(capsys, "experiment", config)
    assert r.code == 0, r.err
    assert r.err.count("finished already, skipped") == 2 and "training" not in r.err
    assert _models(out) == before
    # an argument asked for differently is still refused, by --dry-run as by the run
    config.write_text(VIT_EXPERIMENT.format(out=out).replace("patch_size = 4", "patch_size = 8"))
    for extra in (("--dry-run",), ()):
        r = icckd(capsys, "experiment", config, *extra)
        assert r.code == 2
        assert f"error: {student} was run with model_args = " in r.err
        assert "'patch_size': 8" in r.err and "delete that folder to redo it" in r.err


@pytest.mark.parametrize("folder", ["cifar10-jpeg", "my-images"])
@pytest.mark.parametrize("extra", [("--dry-run",), ()])
def test_a_missing_data_folder_is_refused_by_the_dry_run_as_by_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, folder: str, extra: tuple[str, ...]
) -> None:
    data = tmp_path / "data" / folder  # not unpacked
    config = tmp_path / "exp.toml"
    config.write_text(tiny_experiment(
        tmp_path, ('dataset = "digits"', f'dataset = "imagefolder"\ndata_dir = "{data}"')
    ))  # fmt: skip
    r = icckd(capsys, "experiment", config, *extra)
    assert r.code == 2
    unpack = "unpack the data set there"
    if folder == "cifar10-jpeg":
        unpack = (
            f"unpack the archive there (`tar xzf cifar10-jpeg.tgz -C {data.parent}` gives "
            f"{data}/train/<class>/*.jpg and {data}/test/)"
        )
    assert r.err == (
        f"error: data directory {data} (data_dir in {config}) does not exist; {unpack}, or "
        "set data_dir to the folder holding train/ and test/\n"
    )
    assert r.out == "" and not (tmp_path / "exp").exists()  # no run listed, nothing written


@pytest.mark.slow
def test_in_a_log_every_run_prints_one_line_per_epoch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # stderr captured, as when piped to a log: no bars, so the epochs must say the run lives
    config = tmp_path / "tiny.toml"
    small = ("train_per_class = 20\ntest_per_class = 5", "train_per_class = 5\ntest_per_class = 3")
    two = ("epochs = 1  # teacher", "epochs = 2  # teacher")
    config.write_text(tiny_experiment(tmp_path, ("seeds = [0, 1]", "seeds = [0]"), small, two))
    r = icckd(capsys, "experiment", config, "--no-latency")
    assert r.code == 0, r.err
    runs = ["teachers/ce/seed0", "teachers/icc/seed0", "students/ce/kd/seed0",
            "students/icc/kd/seed0", "baseline/seed0"]  # fmt: skip
    for i, label in enumerate(runs, 1):
        epochs = 2 if label.startswith("teachers/") else 1
        prefix = f"run {i}/5: {label}: epoch "
        shown = [line for line in r.err.splitlines() if line.startswith(prefix)]
        assert [line[len(prefix) :].split()[0] for line in shown] == [
            f"{e}/{epochs}" for e in range(1, epochs + 1)
        ], r.err
        assert all(line.endswith(" img/s") for line in shown), shown
