"""icckd tune's file and storage refusals: one line each, before any work, to the letter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from icckd_cli.commands.tune import VAL_REFUSAL, load_tune, parse_tune
from icckd_cli.commands.tune.config import TuneFile
from icckd_cli.commands.tune.study import Storage, open_study
from tests.helpers import icckd

pytest.importorskip("optuna")

BASE = """\
[tune]
dataset = "digits"
train_per_class = 10
val_per_class = 5
test_per_class = 5
device = "cpu"
{tune}
[teacher]
arch = "resnet8"
epochs = 1
{teacher}
[space.teacher]
{space}
"""
SPACE = "margin = { low = -1.0, high = 0.9 }"


def write(tmp_path: Path, tune: str = "", teacher: str = "", space: str = SPACE) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(BASE.format(tune=tune, teacher=teacher, space=space))
    return path


def refused(capsys: pytest.CaptureFixture[str], path: Path, *more: str) -> str:
    """The one error line of `icckd tune PATH`; nothing written next to it."""
    before = sorted(p.name for p in path.parent.iterdir())
    r = icckd(capsys, "tune", str(path), "--out", str(path.parent / "out"), *more)
    assert r.code != 0 and r.out == ""
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert sorted(p.name for p in path.parent.iterdir()) == before  # no OUT, nothing written
    return lines[0]


def test_a_file_without_a_validation_split_is_refused_to_the_letter(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(write(tmp_path).read_text().replace("val_per_class = 5\n", ""))
    assert refused(capsys, path) == (
        "error: tuning needs a validation split (val_per_class or val_fraction in [tune]); "
        "choosing on the test split would choose on the numbers it reports"
    )
    assert VAL_REFUSAL in refused(capsys, path)
    # val_fraction is the other way to hold images out
    path.write_text(path.read_text().replace("[tune]\n", "[tune]\nval_fraction = 0.2\n"))
    assert load_tune(path).options.val_fraction == 0.2


@pytest.mark.parametrize(
    ("tune", "teacher", "space", "message"),
    [
        ("", "", SPACE + "\nmargn = { low = 0.0, high = 0.5 }",
         "[space.teacher]: unknown key 'margn'. Did you mean: margin, model_args?"),
        ("", "", "kd_temperature = [2.0, 4.0]",
         "[space.teacher]: 'kd_temperature' is a setting of distill, not train-teacher; put it "
         "under [space.student]"),
        ("", "", "margin = { low = 0.5, high = 0.5 }",
         "[space.teacher]: margin: low (0.5) must be below high (0.5)"),
        ("", "", "margin = { low = 0.9, high = -1.0 }",
         "[space.teacher]: margin: low (0.9) must be below high (-1)"),
        ("", "", "", "the search space is empty; add ranges or choices under [space.teacher] or "
         "[space.student], e.g. margin = { low = -1.0, high = 0.9 }"),
        ('target = "teacher"', "", "", "the search space is empty; add ranges or choices under "
         "[space.teacher], e.g. margin = { low = -1.0, high = 0.9 }"),
        ("", "", "margin = { low = 0.0, high = 1.0 }",
         "[space.teacher]: margin reaches an invalid value: Input should be less than 1"),
        ("", "", "icc_temperature = { low = 0.0, high = 0.5, log = true }",
         "[space.teacher]: icc_temperature: a log range needs low > 0 (low is 0)"),
        ("", "", "margin = { low = 0.0, high = 0.5, bad = 1 }",
         "[space.teacher]: margin (bad): a range takes low, high, log and step; a list takes "
         "choices"),
        ("", "", 'margin = { low = "a", high = 0.9 }',
         "[space.teacher]: margin (low): Input should be a number"),
        ("", "", "margin = { low = -1.0, high = [0.9] }",
         "[space.teacher]: margin (high): Input should be a number"),
        ("", "", "embedding = [{}]", "[space.teacher]: embedding (choices): Input should be "
         "true or false, a number or a string"),
        ("", "", "margin = 0.5", "[space.teacher]: margin = 0.5: give a range "
         "{ low = ..., high = ... } or a list of choices [...]"),
        ("", "margin = 0.2", SPACE,
         "'margin' is fixed in [teacher] and searched in [space.teacher]; keep one"),
        ("", "dataset = \"cifar10\"", SPACE, "[teacher]: 'dataset' belongs in [tune] (every run "
         "of every trial uses the same data, device and tensorboard setting)"),
        ("", "out = \"x\"", SPACE, "[teacher]: 'out' is set by the tuner; trials run in "
         "OUT/trials/NNNN/teacher and OUT/trials/NNNN/student"),
        ("", "", "seed = [0, 1]", "[space.teacher]: 'seed' is not searched (a seed is no setting "
         "to choose); fix it in [teacher] or [student]"),
        ("n_trails = 3", "", SPACE,
         "[tune]: unknown key 'n_trails'. Did you mean: n_trials, train_per_class?"),
        ('sampler = "grid"', "", SPACE,
         "[tune]: invalid sampler = 'grid': Input should be 'tpe' or 'random'"),
        ('target = "teacher"', "", SPACE + "\n[space.student]\nkd_temperature = [2.0]",
         '[space.student] is searched but target = "teacher" trains no student; set target = '
         '"student" in [tune] or drop [space.student]'),
        ("", "arch = \"resnet9000\"", "", None),
    ],
)  # fmt: skip
def test_bad_files_are_refused_in_one_line_before_any_work(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tune: str,
    teacher: str,
    space: str,
    message: str | None,
) -> None:
    if message is None:  # a bad architecture: the zoo's own message, naming the table
        path = tmp_path / "s.toml"
        path.write_text(write(tmp_path, space=SPACE).read_text().replace('"resnet8"', '"resnet9k"'))
        assert refused(capsys, path).startswith(f"error: {path}: [teacher]: ")
        return
    path = write(tmp_path, tune, teacher, space)
    assert refused(capsys, path) == f"error: {path}: {message}"


def test_a_validation_split_that_leaves_no_training_image_is_refused_before_out_is_made(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # digits has 142 or more training images of each class; the first class refused is '0'
    path = write(tmp_path, space=SPACE)
    path.write_text(path.read_text().replace("val_per_class = 5", "val_per_class = 500"))
    assert refused(capsys, path) == (
        f"error: {path}: [tune]: val_per_class 500 holds out 500 of the 142 training images of "
        "class '0' and leaves it none to train on; lower val_per_class"
    )


def test_a_file_without_a_tune_table_is_told_the_table_is_missing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[teacher]\narch = "resnet8"\n\n[space.teacher]\n' + SPACE + "\n")
    assert refused(capsys, path) == (
        f"error: {path}: the [tune] table is missing; add one with the data set and a "
        'validation split, e.g. [tune] dataset = "digits", val_per_class = 5 (see docs/tuning.md)'
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--n-trials", "0"], "invalid value for --n-trials (0): Input should be greater than "
         "or equal to 1"),
        (["--timeout", "0"], "invalid value for --timeout (0.0): Input should be greater than 0"),
    ],
)  # fmt: skip
def test_a_bad_option_is_blamed_on_the_option_not_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, option: list[str], message: str
) -> None:
    assert refused(capsys, write(tmp_path), *option) == "error: " + message
    # the same value written in the file is the file's
    path = write(tmp_path, tune="n_trials = 0")
    assert refused(capsys, path) == (
        f"error: {path}: [tune]: invalid n_trials = 0: Input should be greater than or equal to 1"
    )


def test_an_unknown_table_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text() + "\n[studnet]\narch = 'resnet8'\n")
    assert (
        refused(capsys, path)
        == f"error: {path}: unknown table [studnet]. Did you mean: student, tune?"
    )
    path.write_text(write(tmp_path).read_text() + "\n[space.studnt]\nlr = [0.1]\n")
    assert refused(capsys, path) == (
        f"error: {path}: unknown table [space.studnt]. Did you mean: student?"
    )


def test_ranges_and_choices_become_the_right_kinds(tmp_path: Path) -> None:
    space = (
        "margin = { low = -1.0, high = 0.9 }\nqueue_size = { low = 0, high = 64, step = 16 }\n"
        "icc_temperature = { low = 0.05, high = 0.5, log = true }\n"
        "embedding = ['features', 'logits']"
    )
    tune = load_tune(write(tmp_path, space=space))
    p = tune.space["teacher"]
    assert not p["margin"].integer and p["queue_size"].integer and p["icc_temperature"].log
    assert p["embedding"].choices == ["features", "logits"]
    assert tune.options.target == "student" and tune.options.n_trials == 20  # the defaults
    # the fingerprint follows the space and the target, not the fixed settings
    other = load_tune(write(tmp_path, teacher="lr = 0.1", space=space))
    assert other.fingerprint() == tune.fingerprint()
    moved = load_tune(write(tmp_path, space=space.replace("0.9", "0.8")))
    assert moved.fingerprint() != tune.fingerprint()


def test_bad_storage_urls_and_unreachable_servers_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path)
    line = refused(capsys, path, "--storage", "not-a-url")
    assert line == (
        "error: invalid value for --storage ('not-a-url'): give a database URL, e.g. "
        "postgresql://USER:PASSWORD@HOST:5432/DATABASE"
    )
    line = refused(capsys, path, "--storage", "nosuchdb://x/y")
    assert line.startswith("error: invalid value for --storage (nosuchdb://x/y): ")
    # a closed port on loopback: refused at once; the password never printed
    line = refused(capsys, path, "--storage", "postgresql://u:secret@127.0.0.1:1/db")
    assert line.startswith("error: cannot open the study storage postgresql://u:***@127.0.0.1:1/db")
    assert line.endswith("check that the server runs and the URL's host, port, user and database")
    assert "secret" not in line


def test_a_study_of_another_file_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    first = load_tune(write(tmp_path), {"out": tmp_path / "out"})
    open_study(first, Storage(None, tmp_path / "out"), "study")  # made by the first file
    path = write(tmp_path, space="margin = { low = 0.0, high = 0.9 }")
    r = icckd(capsys, "tune", str(path), "--out", str(tmp_path / "out"))
    assert r.code == 2
    journal = (tmp_path / "out" / "study.journal").resolve()
    assert r.err.strip() == (
        f"error: study 'study' in {journal} was made from another file (another space or "
        "target); pass another --study-name or --out, or use the file it was made from"
    )


def test_a_missing_optuna_names_the_install_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    line = refused(capsys, write(tmp_path))
    assert line == "error: icckd tune needs Optuna; install it with pip install -e '.[tune]'"


def test_parse_tune_keeps_the_fixed_settings_and_builds_run_configs() -> None:
    raw = {
        "tune": {"dataset": "digits", "val_per_class": 5, "train_per_class": 10},
        "teacher": {"arch": "resnet8", "epochs": 2, "train_per_class": 8},
        "student": {"arch": "resnet8", "method": "dkd"},
        "space": {"teacher": {"margin": {"low": -1.0, "high": 0.9}}},
    }
    tune = parse_tune(raw, "t.toml")
    assert isinstance(tune, TuneFile) and tune.roles == ("teacher", "student")
    cfg = tune.config("teacher", {"margin": 0.25}, out=Path("x"))
    # [teacher]'s train_per_class over [tune]'s; the searched value; the managed folder
    assert (cfg.train_per_class, cfg.margin, cfg.epochs, cfg.val_per_class) == (8, 0.25, 2, 5)
    student = tune.config("student", {}, out=Path("y"), teacher=Path("t.safetensors"))
    assert student.method == "dkd" and student.train_per_class == 10


def test_the_median_pruner_judges_no_trial_in_its_first_half(tmp_path: Path) -> None:
    from icckd_cli.commands.tune import sampling, steps

    path = write(tmp_path, space=SPACE + "\n[space.student]\nkd_temperature = [2.0, 4.0]")
    path.write_text(path.read_text() + "\n[student]\nepochs = 3\n")
    tune = load_tune(path)
    assert steps(tune) == 1 + 3  # the teacher's epoch, then the student's on one axis
    assert sampling.make_pruner("median", steps(tune))._n_warmup_steps == 2
    assert type(sampling.make_pruner("none")).__name__ == "NopPruner"


def test_confirm_keeps_the_tuned_non_intra_class_settings_for_both_teachers(
    tmp_path: Path,
) -> None:
    from icckd_cli.commands.experiment.config import parse_experiment
    from icckd_cli.commands.tune.files import confirm_toml

    raw = {
        "tune": {"dataset": "digits", "val_fraction": 0.2, "target": "teacher", "out": "o"},
        "teacher": {"arch": "resnet8", "label_smoothing": 0.1, "seed": 3},
        "space": {"teacher": {"lr": {"low": 0.01, "high": 0.1, "log": True}, "margin": [0.5]}},
    }
    text = confirm_toml(
        parse_tune(raw, "t.toml"), {"teacher.lr": 0.03, "teacher.margin": 0.5}, 4, "s"
    )
    (tmp_path / "c.toml").write_text(text)
    from icckd_cli.settings.config import read_toml

    exp = parse_experiment(read_toml(tmp_path / "c.toml"), "c.toml")
    ce, tuned = exp.teachers
    # both teachers train with the tuned lr; only the intra-class term (and smoothing) differ
    assert (ce.config.lr, tuned.config.lr) == (0.03, 0.03)
    assert ce.cross_entropy and not tuned.cross_entropy
    assert (tuned.config.margin, tuned.config.label_smoothing) == (0.5, 0.1)
    assert exp.students == [] and exp.options.seeds == [0, 1, 2]  # target teacher: no student


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[1] / "examples" / "tune").glob("*.toml")),
    ids=lambda p: p.stem,
)
def test_every_tune_example_loads(path: Path) -> None:
    tune = load_tune(path)
    assert tune.space["teacher"], f"{path} searches no teacher setting"
