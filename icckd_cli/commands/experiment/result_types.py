"""An experiment's results as types, each built once, serialised as results.json.

`to_json()` gives each value's JSON form, with the keys in the order results.json has
always had them (the tables and results.md are rendered from that form, so a saved
results.json renders the same).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

TRANSFER_KEYS = ("kd_worse_seeds", "negative_flip_rate", "agreement")  # Transfer's, in order
COST_KEYS = ("params", "size_mb", "macs", "image_size", "latency_ms")


@dataclass(frozen=True)
class Setup:
    """What was run: the data set, each role's subset, the seeds, the folder."""

    name: str
    dataset: str
    train_per_class: int | None
    teacher_train_per_class: int | None
    student_train_per_class: int | None
    test_per_class: int | None
    val_per_class: int | None
    val_fraction: float | None
    seeds: list[int]
    out: str
    teacher_seeds: list[int]
    temperature: float  # T of the soft-label diversity

    def to_json(self) -> dict[str, Any]:
        """The first keys of results.json, in this order."""
        return asdict(self)


@dataclass(frozen=True)
class Stats:
    """Mean and sample std over the seeds present; n counts them, of `seeds`."""

    mean: float | None
    std: float | None
    n: int
    seeds: int
    values: dict[str, float]  # by seed, as results.json keys them

    def to_json(self) -> dict[str, Any]:
        """{mean, std, n, seeds, values}."""
        return {"mean": self.mean, "std": self.std, "n": self.n, "seeds": self.seeds,
                "values": dict(self.values)}  # fmt: skip


@dataclass(frozen=True)
class Difference(Stats):
    """Stats of paired differences, with the 95% t-interval and the seeds above 0."""

    ci95: tuple[float, float] | None = None
    positive: int = 0

    def to_json(self) -> dict[str, Any]:
        """Stats' keys, then ci95 and positive."""
        ci = None if self.ci95 is None else list(self.ci95)
        return {**super().to_json(), "ci95": ci, "positive": self.positive}


@dataclass(frozen=True)
class LastBest:
    """A cell at the last and at the best epoch."""

    last: Stats
    best: Stats

    def to_json(self) -> dict[str, Any]:
        """{last, best}."""
        return {"last": self.last.to_json(), "best": self.best.to_json()}


@dataclass(frozen=True)
class TeacherSummary:
    """One teacher over its seeds: top-1 at the last epoch and its soft labels' diversity."""

    name: str
    arch: str
    objective: str
    icc_weight: float
    cross_entropy: bool
    top1: Stats
    diversity: dict[str, Stats]

    def to_json(self) -> dict[str, Any]:
        """results.json's `teachers` entry."""
        return {"name": self.name, "arch": self.arch, "objective": self.objective,
                "icc_weight": self.icc_weight, "cross_entropy": self.cross_entropy,
                "top1": self.top1.to_json(),
                "diversity": {k: v.to_json() for k, v in self.diversity.items()}}  # fmt: skip


@dataclass(frozen=True)
class TeacherDifference:
    """A teacher minus the cross-entropy teacher, paired by teacher seed."""

    teacher: str
    reference: str
    last: Difference

    def to_json(self) -> dict[str, Any]:
        """results.json's `teacher_differences` entry."""
        return {"teacher": self.teacher, "reference": self.reference, "last": self.last.to_json()}


@dataclass(frozen=True)
class Transfer:
    """Negative transfer of one student method from one teacher (transfer.py)."""

    kd_worse_seeds: int | None = None
    negative_flip_rate: float | None = None
    agreement: float | None = None

    def to_json(self) -> dict[str, Any]:
        """{kd_worse_seeds, negative_flip_rate, agreement}."""
        return {
            "kd_worse_seeds": self.kd_worse_seeds,
            "negative_flip_rate": self.negative_flip_rate,
            "agreement": self.agreement,
        }


@dataclass(frozen=True)
class StudentCell:
    """One student method distilled from one teacher, over the seeds."""

    student: str
    method: str
    arch: str
    teacher: str
    top1: LastBest
    transfer: Transfer | None = None
    labels: str | None = None  # which images carry labels, where some do not ("5 per class")

    def to_json(self) -> dict[str, Any]:
        """results.json's `students` entry (`labels` only where some images have none)."""
        about = {"student": self.student, "method": self.method, "arch": self.arch,
                 "teacher": self.teacher, "labels": self.labels}  # fmt: skip
        more = {} if self.transfer is None else self.transfer.to_json()
        return {**{k: v for k, v in about.items() if v is not None}, **self.top1.to_json(), **more}


@dataclass(frozen=True)
class TeacherGap:
    """The teachers' paired difference behind an answer, and the line of one on the other."""

    difference: Difference
    line: dict[str, Any] | None  # metrics/regression.py's paired_line, as JSON


@dataclass(frozen=True)
class Answer:
    """A paired difference at the last epoch: a student minus the student alone
    (reference None) or minus the same student from the reference teacher."""

    student: str
    method: str
    teacher: str
    reference: str | None
    last: Difference
    best: Difference | None = None
    metric: str | None = None  # another measure than top-1 (transfer.py)
    gap: TeacherGap | None = None

    def to_json(self) -> dict[str, Any]:
        """results.json's `answers` (and `differences`) entry."""
        out: dict[str, Any] = {"student": self.student, "method": self.method,
                               "teacher": self.teacher, "reference": self.reference}  # fmt: skip
        if self.metric is not None:
            out["metric"] = self.metric
        out["last"] = self.last.to_json()
        if self.best is not None:
            out["best"] = self.best.to_json()
        if self.gap is not None:
            out["teacher_difference"] = self.gap.difference.to_json()
            out["line"] = self.gap.line
        return out


@dataclass(frozen=True)
class Baseline:
    """The student architecture trained alone."""

    arch: str
    top1: LastBest

    def to_json(self) -> dict[str, Any]:
        """results.json's `baseline`."""
        return {"arch": self.arch, **self.top1.to_json()}


@dataclass(frozen=True)
class CostRow:
    """A teacher, a student from one teacher or the student alone, with its architecture's cost."""

    role: str  # teacher, student or baseline
    name: str
    arch: str
    top1: Stats  # at the last epoch
    cost: dict[str, Any]  # COST_KEYS of its architecture; None where not measured
    teacher: str | None = None  # a student's
    speedup: float | None = None  # a student's: its teacher's batch-1 latency over its own

    def to_json(self) -> dict[str, Any]:
        """results.json's `cost.rows` entry."""
        out = {"role": self.role, "name": self.name, "arch": self.arch,
               "top1": self.top1.to_json(), **{k: self.cost.get(k) for k in COST_KEYS}}  # fmt: skip
        if self.teacher is not None:
            out["teacher"] = self.teacher
        return {**out, "speedup": self.speedup}


@dataclass(frozen=True)
class Costs:
    """The accuracy-against-cost rows, how latency was timed, and the figure of them."""

    latency: bool | None
    timing: dict[str, Any] | None
    rows: list[CostRow]
    figure: str | None = None  # accuracy_latency.png once drawn; None when nothing to draw

    def to_json(self, drawn: bool) -> dict[str, Any]:
        """results.json's `cost`; `figure` once the figures were drawn (`drawn`)."""
        out = {"latency": self.latency, "timing": self.timing,
               "rows": [r.to_json() for r in self.rows]}  # fmt: skip
        return {**out, "figure": self.figure} if drawn else out


@dataclass(frozen=True)
class MatchedTeacher:
    """The epoch of a teacher its students read under match_teachers, and its top-1."""

    epoch: int
    val_top1: float
    test_top1: float | None

    def to_json(self) -> dict[str, Any]:
        """{epoch, val_top1, test_top1}."""
        return {"epoch": self.epoch, "val_top1": self.val_top1, "test_top1": self.test_top1}


@dataclass(frozen=True)
class MatchedSeed:
    """One teacher seed's match: the target validation top-1 and each teacher's epoch."""

    target_val_top1: float
    teachers: dict[str, MatchedTeacher]

    def to_json(self) -> dict[str, Any]:
        """results.json's `matched` entry of one teacher seed."""
        teachers = {name: t.to_json() for name, t in self.teachers.items()}
        return {"target_val_top1": self.target_val_top1, "teachers": teachers}


@dataclass(frozen=True)
class ExperimentResults:
    """Everything results.json holds; the optional parts are None until assembled."""

    setup: Setup
    command: str
    answers: list[Answer]
    answers_summary: str
    teachers: list[TeacherSummary]
    teacher_differences: list[TeacherDifference]
    students: list[StudentCell]
    differences: list[Answer]
    baseline: Baseline | None
    cost: Costs
    imbalance_factor: float | None = None
    match_teachers: bool | None = None
    matched: dict[int, MatchedSeed] | None = None  # by teacher seed (matched/plan.py)
    figures: list[dict[str, str]] | None = None  # the learning curves, once drawn

    def to_json(self) -> dict[str, Any]:
        """results.json, keys in their order."""
        out = {**self.setup.to_json(), "command": self.command,
               "answers": [a.to_json() for a in self.answers],
               "answers_summary": self.answers_summary,
               "teachers": [t.to_json() for t in self.teachers],
               "teacher_differences": [d.to_json() for d in self.teacher_differences],
               "students": [s.to_json() for s in self.students],
               "differences": [d.to_json() for d in self.differences],
               "baseline": None if self.baseline is None else self.baseline.to_json(),
               "cost": self.cost.to_json(drawn=self.figures is not None)}  # fmt: skip
        if self.imbalance_factor is not None:
            out["imbalance_factor"] = self.imbalance_factor
        if self.match_teachers is not None:
            out["match_teachers"] = self.match_teachers
        if self.matched is not None:
            out["matched"] = {str(k): m.to_json() for k, m in self.matched.items()}
        if self.figures is not None:
            out["figures"] = self.figures
        return out
