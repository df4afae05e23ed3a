"""What an experiment is once validated: its options, its entries, and its runs in order.

Every cell of the matrix is a plain train-teacher or distill run in its own folder:

    OUT/teachers/<teacher>/seed<k>/               cross-entropy or intra-class teacher
    OUT/students/<teacher>/<student>/seed<k>/     distilled from the teacher of seed k
    OUT/baseline/seed<k>/                         the student architecture alone (optional)
    OUT/teacher_cache/<teacher>/seed<k>/          its outputs, where two or more students share it
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from icckd_cli.methods import registry
from icckd_cli.settings.config import DataOptions, DistillConfig, TrainTeacherConfig
from icckd_cli.settings.executor import ExecutorConfig
from icckd_cli.training.rundir import MODEL_FILE, STATE_FILE

MATCHED_STUDENTS = "students-matched"
MATCHED_CACHE = "teacher_cache-matched"


class ExperimentOptions(DataOptions):
    """The [experiment] table: the data every run shares, the seeds and the output folder."""

    name: str = "experiment"
    out: Path = Path("experiment")
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    # teachers cost most: fewer teacher seeds than student seeds; student seed i (in order)
    # distills from teacher_seeds[i mod n]. None: the teachers use `seeds` too
    teacher_seeds: list[int] | None = Field(None, min_length=1)
    device: str = "auto"
    temperature: float = Field(4.0, gt=0)  # T of the soft-label diversity columns
    latency: bool = True  # time each architecture's batch-1 latency for the cost table
    # students that share a teacher read its outputs from one store (teacher_store.py)
    teacher_cache: bool = True
    tensorboard: bool | None = None  # None: event files when the tensorboard package is installed
    # students distill from each teacher's epoch that reaches the weakest one's best (matched/)
    match_teachers: bool = False
    # the students' top-1 under corruptions in the answers (robustness/students.py)
    corruptions: bool = False
    corruptions_dir: Path | None = None  # a CIFAR-10-C folder; None: the built-in suite

    @field_validator("seeds", "teacher_seeds")
    @classmethod
    def _distinct(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and (any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds)):
            raise ValueError("seeds must be distinct whole numbers >= 0, e.g. [0, 1, 2]")
        return seeds

    def resolved_teacher_seeds(self) -> list[int]:
        """The teachers' seeds: teacher_seeds, or the seeds of the whole experiment."""
        return list(self.teacher_seeds or self.seeds)


@dataclass
class Teacher:
    """One [[teachers]] entry, resolved."""

    name: str
    config: TrainTeacherConfig  # seed and out are filled in per run

    @property
    def cross_entropy(self) -> bool:
        """Plain cross-entropy (no intra-class term, no label smoothing) is the baseline."""
        return self.config.icc_weight == 0 and self.config.label_smoothing == 0


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
    teacher_seed: int | None = None  # a student's: the seed of the teacher run it distills from

    @property
    def out(self) -> Path:
        """The run folder."""
        return Path(self.config.out)

    @property
    def distill(self) -> DistillConfig | None:
        """A student's distill settings; None for a teacher and the student alone."""
        return self.config if isinstance(self.config, DistillConfig) else None

    @property
    def teacher_cache(self) -> Path | None:
        """The teacher-output store a student reads; None where it has none."""
        return None if self.distill is None else self.distill.teacher_cache

    def status(self) -> str:
        """done (model saved), partial (resumable state saved) or new."""
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
    # where the runs train: in this process, in local workers, as Slurm jobs
    executor: ExecutorConfig = field(default_factory=lambda: ExecutorConfig.model_validate({}))

    def __post_init__(self) -> None:
        self.runs = plan(self)

    def teacher_runs(self, name: str) -> dict[int, Run]:
        """The runs of one teacher by seed."""
        return {r.seed: r for r in self.runs if r.kind == "teacher" and r.teacher == name}

    def needs_torchvision(self) -> bool:
        """Whether a run, a data set or the built-in corruption suite will import torchvision."""
        from icckd_cli.data.sources import TORCHVISION_DATASETS
        from icckd_cli.models.registry import uses_torchvision

        o = self.options
        return (
            (o.corruptions and o.corruptions_dir is None)
            or any(uses_torchvision(r.config.arch) for r in self.runs)
            or any(r.config.dataset in TORCHVISION_DATASETS for r in self.runs)
        )


def plan(exp: Experiment) -> list[Run]:
    """Every run in order: per seed the teachers, then their students, then the baseline.

    Student seed i (in order) distills from teacher seed teacher_seeds[i mod n], so each
    teacher is trained before the first student that needs it.
    """
    root = Path(exp.options.out)
    teacher_seeds = exp.options.resolved_teacher_seeds()
    runs = []
    for i, seed in enumerate(exp.options.seeds):
        if i < len(teacher_seeds):
            for t in exp.teachers:
                tseed = teacher_seeds[i]
                label = f"teachers/{t.name}/seed{tseed}"
                cfg = t.config.model_copy(update={"seed": tseed, "out": root / label})
                runs.append(Run("teacher", label, tseed, cfg, teacher=t.name))
        tseed = teacher_seeds[i % len(teacher_seeds)]
        for t in exp.teachers:
            weights = root / f"teachers/{t.name}/seed{tseed}/model.safetensors"
            for s in exp.students:
                label = f"students/{t.name}/{s.name}/seed{seed}"
                update = {"seed": seed, "out": root / label, "teacher": weights}
                student = s.config.model_copy(update=update)
                runs.append(
                    Run("student", label, seed, student, t.name, s.name, teacher_seed=tseed)
                )
        if exp.baseline is not None:
            label = f"baseline/seed{seed}"
            cfg = exp.baseline.model_copy(update={"seed": seed, "out": root / label})
            runs.append(Run("baseline", label, seed, cfg))
    if exp.options.teacher_cache:
        share_teacher_outputs(runs, root)
    # teacher seeds beyond the student seeds still get their teachers
    for tseed in teacher_seeds[len(exp.options.seeds) :]:
        for t in exp.teachers:
            label = f"teachers/{t.name}/seed{tseed}"
            cfg = t.config.model_copy(update={"seed": tseed, "out": root / label})
            runs.append(Run("teacher", label, tseed, cfg, teacher=t.name))
    if exp.options.match_teachers:  # snapshots kept, students in their own folders
        match_plan(runs, root)
    return runs


def share_teacher_outputs(runs: list[Run], root: Path) -> None:
    """Students of one teacher run on one augmentation stream read one teacher-output store.

    Students that would see the same batches (batch size, epochs, padding) and keep the same
    outputs (dtype, top-k) form a group; a group of two or more gets the store, in
    OUT/teacher_cache/<teacher>/seed<k> (with a suffix where one teacher has several), and
    the data seed of that teacher's run; the first student to run writes it. A student whose
    method reads the teacher's feature maps, which no store holds, runs its teacher; so does
    one with unlabelled images or mixup, whose teacher must see its own view, live.
    """
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        cfg = run.config
        if not isinstance(cfg, DistillConfig) or cfg.masked_ce():  # function matching: live
            continue
        if registry.needs_teacher_stages(cfg.resolved_weights()):
            continue
        stream = (cfg.batch_size, cfg.epochs, cfg.crop_padding)
        kept = (cfg.teacher_cache_dtype, cfg.teacher_cache_topk)
        groups.setdefault((run.teacher, run.teacher_seed, stream, kept), []).append(run)
    count: dict[tuple, int] = {}
    for (teacher, tseed, _, _), members in groups.items():
        if len(members) < 2:
            continue
        n = count[teacher, tseed] = count.get((teacher, tseed), 0) + 1
        folder = root / "teacher_cache" / str(teacher) / f"seed{tseed}{f'-{n}' if n > 1 else ''}"
        embeddings = any(
            m.config.cache_embeddings(m.config.resolved_weights())  # type: ignore[union-attr]
            for m in members
        )
        for m in members:
            update = {"teacher_cache": folder, "data_seed": tseed}
            update["teacher_cache_embeddings"] = embeddings
            m.config = m.config.model_copy(update=update)


def match_plan(runs: list[Run], root: Path) -> None:
    """match_teachers: teachers keep snapshots; students (and their stores) move to their
    matched folders (OUT/students-matched/..., OUT/teacher_cache-matched/...)."""
    root = Path(root)
    for run in runs:
        if run.kind == "teacher":
            run.config = run.config.model_copy(update={"keep_snapshots": True})
        elif run.kind == "student":
            run.label = MATCHED_STUDENTS + run.label.removeprefix("students")
            update: dict[str, Any] = {"out": root / run.label}
            if run.teacher_cache is not None:
                relative = Path(run.teacher_cache).relative_to(root / "teacher_cache")
                update["teacher_cache"] = root / MATCHED_CACHE / relative
            run.config = run.config.model_copy(update=update)
