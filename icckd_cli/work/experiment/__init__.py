"""`icckd experiment`: teachers x student methods x seeds as ordinary runs, and one table.

config.py reads and validates the experiment file, plan.py is what it becomes and its runs
in order (the folder layout), matrix.py does the runs not finished yet, results.py turns
them into numbers and results.json, markdown.py into the tables and results.md (costs.py:
the accuracy-against-cost table and figure; answers.py: the answers first), and
quickstart.py holds the built-in experiment.
"""

from __future__ import annotations

from icckd_cli.work.experiment.config import (
    MANAGED,
    NAME,
    SHARED,
    TABLES,
    Experiment,
    ExperimentOptions,
    Run,
    Student,
    Teacher,
    load_experiment,
    parse_experiment,
    plan,
)
from icckd_cli.work.experiment.costs import cost_figure, cost_table, measure_costs
from icckd_cli.work.experiment.matrix import (
    DIVERSITY_FILE,
    IGNORED_ON_REUSE,
    Callback,
    check_reusable,
    check_student_teacher,
    measure_diversity,
    plan_states,
    run_experiment,
)
from icckd_cli.work.experiment.quickstart import QUICKSTART_TOML, quickstart_experiment
from icckd_cli.work.experiment.results import (
    DIVERSITY_KEYS,
    TableSpec,
    aggregate,
    cell,
    collect,
    paired_difference,
    result_tables,
    results_markdown,
    write_results,
)

__all__ = [
    "DIVERSITY_FILE",
    "DIVERSITY_KEYS",
    "IGNORED_ON_REUSE",
    "MANAGED",
    "NAME",
    "QUICKSTART_TOML",
    "SHARED",
    "TABLES",
    "Callback",
    "Experiment",
    "ExperimentOptions",
    "Run",
    "Student",
    "TableSpec",
    "Teacher",
    "aggregate",
    "cell",
    "check_reusable",
    "check_student_teacher",
    "collect",
    "cost_figure",
    "cost_table",
    "load_experiment",
    "measure_costs",
    "measure_diversity",
    "paired_difference",
    "parse_experiment",
    "plan",
    "plan_states",
    "quickstart_experiment",
    "result_tables",
    "results_markdown",
    "run_experiment",
    "write_results",
]
