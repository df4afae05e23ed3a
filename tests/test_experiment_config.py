"""The experiment file: one-line errors naming the table, shared tables, the plan, examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from icckd_cli.base.errors import UsageError
from icckd_cli.commands.experiment.config import load_experiment, parse_experiment
from icckd_cli.commands.experiment.markdown import results_markdown
from icckd_cli.commands.experiment.results import collect
from icckd_cli.methods.registry import choices
from icckd_cli.settings.config import read_toml
from tests.helpers import icckd, parse_experiment_text, tiny_experiment

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (("[student]", "[studnet]"),
         "x.toml: unknown table [studnet]. Did you mean: student, students?"),
        (("icc_weight = 0.1", "icc_wieght = 0.1"),
         "x.toml: [[teachers]] 'icc': unknown key 'icc_wieght'. Did you mean: icc_weight?"),
        (("baseline = true", "baseline = true\nepoch = 3"),
         "x.toml: [student]: unknown key 'epoch'. Did you mean: epochs, warmup_epochs, "
         "ft_init_epochs?"),
        (("[teacher]\n", "[teacher]\ndataset = \"cifar10\"\n"),
         "x.toml: [teacher]: 'dataset' belongs in [experiment] (every run of an experiment uses "
         "the same data, device and tensorboard setting)"),
        (("method = \"kd\"", "method = \"kd\"\nseed = 3"),
         "x.toml: [[students]] 'kd': 'seed' is set by the experiment; use seeds = [...] in "
         "[experiment]"),
        (("margin = -1", "margin = 1.5"),
         "x.toml: [[teachers]] 'icc': invalid margin = 1.5: Input should be less than 1"),
        (("epochs = 1  # student", "epochs = 0"),
         "x.toml: [student]: invalid epochs = 0: Input should be greater than or equal to 1"),
        (("method = \"kd\"", "method = \"kdd\""),
         "x.toml: [[students]] 'kdd': invalid method = 'kdd': Input should be 'kd', 'rkd', "
         f"'kd+rkd', {', '.join(map(repr, choices()[3:-1]))} or {choices()[-1]!r}"),
        (("seeds = [0, 1]", "seeds = [0, 0]"),
         "x.toml: [experiment]: invalid seeds = [0, 0]: seeds must be distinct whole numbers "
         ">= 0, e.g. [0, 1, 2]"),
        (("seeds = [0, 1]", "seeds = [0, 1]\nteacher_seeds = [1, 1]"),
         "x.toml: [experiment]: invalid teacher_seeds = [1, 1]: seeds must be distinct whole "
         "numbers >= 0, e.g. [0, 1, 2]"),
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
        (("baseline = true", "baseline = true\ntrain_per_class = 0"),
         "x.toml: [student]: invalid train_per_class = 0: Input should be greater than or "
         "equal to 1"),
        (("name = \"icc\"", "name = \"icc\"\ntrain_per_class = 5"),
         "x.toml: [[teachers]] 'icc': 'train_per_class' belongs in [teacher] or [experiment] "
         "(every teacher of an experiment trains on the same images)"),
        (("method = \"kd\"", "method = \"kd\"\ntrain_per_class = 5"),
         "x.toml: [[students]] 'kd': 'train_per_class' belongs in [student] or [experiment] "
         "(every student of an experiment trains on the same images)"),
        (("baseline = true", "baseline = true\noptimizer = \"rmsprop\""),
         "x.toml: [student]: invalid optimizer = 'rmsprop': Input should be 'sgd' or 'adamw'"),
        (("epochs = 1  # teacher", "epochs = 1\nwarmup_epochs = 2"),
         "x.toml: [[teachers]] 'ce': invalid value for --warmup-epochs (2): beyond the last "
         "epoch (1); give at most --epochs"),
        (("baseline = true", "baseline = true\ntest_per_class = 2"),
         "x.toml: [student]: 'test_per_class' belongs in [experiment] (runs that are compared "
         "must be evaluated on the same test images)"),
    ],
)  # fmt: skip
def test_bad_experiment_files_fail_with_one_line_naming_the_table(
    tmp_path: Path, replace: tuple[str, str], message: str
) -> None:
    with pytest.raises(UsageError) as err:
        parse_experiment_text(tiny_experiment(tmp_path, replace))
    assert err.value.message == message
    assert "\n" not in err.value.message


def test_teacher_and_student_tables_take_the_optimiser_options(tmp_path: Path) -> None:
    text = tiny_experiment(tmp_path, ("baseline = true", 'baseline = true\noptimizer = "adamw"'))
    text = text.replace("epochs = 1  # teacher", 'epochs = 4\nschedule = "cosine"')
    exp = parse_experiment_text(text.replace("epochs = 1  # student", "epochs = 4"))
    for t in exp.teachers:  # SGD (a CNN) with a cosine, no warm-up
        assert (t.config.optimizer, t.config.schedule) == ("sgd", "cosine")
        assert (t.config.resolved_warmup("resnet8"), t.config.resolved_decay()) == (0, [])
    cfg = exp.students[0].config  # AdamW asked for: the DeiT recipe for this CNN student
    assert (cfg.optimizer, cfg.schedule, cfg.weight_decay) == ("adamw", "cosine", 0.05)
    assert cfg.resolved_warmup("resnet8") == 1 and cfg.resolved_lr("resnet8") == 5e-4 * 16 / 512
    assert exp.baseline is not None  # the student alone trains as the students do
    assert (exp.baseline.optimizer, exp.baseline.weight_decay) == ("adamw", 0.05)


def test_teachers_must_be_an_array_of_tables_and_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"write one \[\[teachers\]\] header per entry"):
        parse_experiment_text('[teachers]\nname = "ce"\n')
    with pytest.raises(UsageError, match="x.toml: no teachers; add"):
        parse_experiment_text('[experiment]\ndataset = "digits"\n')


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
    exp = parse_experiment_text(
        tiny_experiment(tmp_path, ('name = "ce"', 'name = "ce"\nepochs = 2'))
    )
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


def test_teacher_and_student_tables_set_their_own_training_subset(tmp_path: Path) -> None:
    exp = parse_experiment_text(
        tiny_experiment(
            tmp_path,
            ("[teacher]\n", "[teacher]\ntrain_per_class = 30\n"),
            ("baseline = true", "baseline = true\ntrain_per_class = 7"),
        )
    )
    per_kind = {(r.kind, r.config.train_per_class) for r in exp.runs}
    assert per_kind == {("teacher", 30), ("student", 7), ("baseline", 7)}
    assert {r.config.test_per_class for r in exp.runs} == {5}  # [experiment]'s, for all
    # a role that sets nothing keeps [experiment]'s subset
    exp = parse_experiment_text(
        tiny_experiment(tmp_path, ("baseline = true", "baseline = true\ntrain_per_class = 7"))
    )
    assert {r.config.train_per_class for r in exp.runs if r.kind == "teacher"} == {20}


def test_fewer_teacher_seeds_than_student_seeds(tmp_path: Path) -> None:
    text = tiny_experiment(
        tmp_path, ("seeds = [0, 1]", "seeds = [0, 1, 2, 3, 4]\nteacher_seeds = [7, 8]")
    )
    exp = parse_experiment_text(text)
    root = tmp_path / "exp"
    teachers = [r.label for r in exp.runs if r.kind == "teacher"]
    assert teachers == ["teachers/ce/seed7", "teachers/icc/seed7", "teachers/ce/seed8",
                        "teachers/icc/seed8"]  # fmt: skip
    # student seed number i distills from teacher seed number i mod 2, trained before it
    taught = {r.label: r.config.teacher for r in exp.runs if r.kind == "student"}
    assert len(taught) == 2 * 5 and sum(r.kind == "baseline" for r in exp.runs) == 5
    for i, seed in enumerate([0, 1, 2, 3, 4]):
        tseed = [7, 8][i % 2]
        for t in ("ce", "icc"):
            label = f"students/{t}/kd/seed{seed}"
            assert taught[label] == root / f"teachers/{t}/seed{tseed}/model.safetensors"
            order = [r.label for r in exp.runs]
            assert order.index(f"teachers/{t}/seed{tseed}") < order.index(label)
    results = collect(exp, {}).to_json()
    assert results["teacher_seeds"] == [7, 8]
    assert all(t["top1"]["seeds"] == 2 for t in results["teachers"])
    assert all(s["last"]["seeds"] == 5 for s in results["students"])
    assert "(teachers: seeds 7, 8;" in results_markdown(results)
    plain = parse_experiment_text(tiny_experiment(tmp_path))  # by default the same seeds
    assert plain.options.resolved_teacher_seeds() == [0, 1]
    assert "(teachers:" not in results_markdown(collect(plain, {}).to_json())


def test_tensorboard_is_one_setting_for_every_run(tmp_path: Path) -> None:
    text = tiny_experiment(tmp_path, ('device = "cpu"', 'device = "cpu"\ntensorboard = false'))
    exp = parse_experiment_text(text)
    assert {r.config.tensorboard for r in exp.runs} == {False} and len(exp.runs) == 10
    file = tmp_path / "x.toml"
    file.write_text(text)
    exp = parse_experiment(read_toml(file), "x.toml", {"tensorboard": True})  # the option wins
    assert {r.config.tensorboard for r in exp.runs} == {True}
    assert {
        r.config.tensorboard for r in parse_experiment_text(tiny_experiment(tmp_path)).runs
    } == {None}
    with pytest.raises(UsageError, match=r"\[teacher\]: 'tensorboard' belongs in \[experiment\]"):
        parse_experiment_text(
            tiny_experiment(tmp_path, ("[teacher]\n", "[teacher]\ntensorboard = true\n"))
        )


# ----------------------------------------------------------------------------- examples


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_validates(path: Path) -> None:
    exp = load_experiment(path)
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


def test_imagenet_example_fine_tunes_published_teachers_and_uses_the_recipe() -> None:
    exp = load_experiment(ROOT / "examples" / "imagenet-resnet34-resnet18.toml")
    assert exp.options.dataset == "imagenet"
    for t in exp.teachers:  # both start from the fetched weights, for the same schedule
        assert t.config.arch == "tv_resnet34" and t.config.epochs == 10
        assert str(t.config.init) == "teachers/tv_resnet34.safetensors"
    (student,) = exp.students
    cfg = student.config
    assert (cfg.arch, cfg.epochs, cfg.batch_size, cfg.weight_decay) == (
        "tv_resnet18",
        100,
        256,
        1e-4,
    )
    assert cfg.resolved_decay() == [30, 60, 90] and cfg.resolved_lr(cfg.arch) == 0.1
    assert cfg.resolved_weights()["kd_weight"] == 0.5 and cfg.kd_temperature == 1.0


def test_students_sharing_a_teacher_read_one_teacher_cache(tmp_path: Path) -> None:
    two = ('method = "kd"', 'method = "kd"\n\n[[students]]\nmethod = "crd"')
    exp = parse_experiment_text(
        tiny_experiment(tmp_path, ("seeds = [0, 1]", "seeds = [0, 1, 2]\nteacher_seeds = [5]"))
    )
    root = tmp_path / "exp"
    students = [r for r in exp.runs if r.kind == "student"]
    # one method, three student seeds on one teacher seed: one store per teacher, whose
    # seed (5) fixes the students' batches; their own seeds vary only their initialisation
    for r in students:
        assert r.config.teacher_cache == root / f"teacher_cache/{r.teacher}/seed5"
        assert r.config.resolved_data_seed() == 5 and r.config.teacher_cache_embeddings is False
    assert sorted({r.config.seed for r in students}) == [0, 1, 2]
    # one teacher seed per student seed and one method: nobody shares, the present behaviour
    alone = [
        r for r in parse_experiment_text(tiny_experiment(tmp_path)).runs if r.kind == "student"
    ]
    assert all(r.config.teacher_cache is None and r.config.data_seed is None for r in alone)
    # two methods share each teacher run; CRD needs the embeddings, so KD's store keeps them
    shared = [r for r in parse_experiment_text(tiny_experiment(tmp_path, two)).runs
              if r.kind == "student"]  # fmt: skip
    assert len(shared) == 8
    for r in shared:
        assert r.config.teacher_cache == root / f"teacher_cache/{r.teacher}/seed{r.seed}"
        assert r.config.data_seed == r.seed and r.config.teacher_cache_embeddings is True
    # a student whose batches differ gets a store of its own, if it has company
    three = ('method = "kd"', 'method = "kd"\n\n[[students]]\nmethod = "rkd"\n\n'
             '[[students]]\nname = "kd16"\nmethod = "kd"\nbatch_size = 8\n\n'
             '[[students]]\nname = "rkd16"\nmethod = "rkd"\nbatch_size = 8')  # fmt: skip
    mixed = parse_experiment_text(tiny_experiment(tmp_path, three))
    caches = {
        r.student: r.config.teacher_cache
        for r in mixed.runs
        if r.kind == "student" and (r.teacher, r.seed) == ("ce", 0)
    }
    assert caches == {"kd": root / "teacher_cache/ce/seed0", "rkd": root / "teacher_cache/ce/seed0",
                      "kd16": root / "teacher_cache/ce/seed0-2",
                      "rkd16": root / "teacher_cache/ce/seed0-2"}  # fmt: skip
    off = parse_experiment_text(
        tiny_experiment(tmp_path, two, ('device = "cpu"', 'device = "cpu"\nteacher_cache = false'))
    )
    assert all(r.config.teacher_cache is None for r in off.runs if r.kind == "student")
    with pytest.raises(UsageError, match=r"'teacher_cache' is set by the experiment; use "):
        parse_experiment_text(tiny_experiment(tmp_path, ('kd"\n', 'kd"\nteacher_cache = "x"\n')))
