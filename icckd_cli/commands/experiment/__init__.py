"""`icckd experiment`: teachers x student methods x seeds as ordinary runs, and one table.

config.py reads and validates the experiment file, plan.py is what it becomes and its runs
in order (the folder layout), matrix.py does the runs not finished yet, results.py turns
them into numbers and results.json, markdown.py into the tables and results.md (costs.py:
the accuracy-against-cost table and figure; answers.py: the answers first), and
quickstart.py holds the built-in experiment.
"""

from __future__ import annotations

# the two doors the CLI opens; everything else is imported from the module that holds it
from icckd_cli.commands.experiment.config import load_experiment
from icckd_cli.commands.experiment.quickstart import quickstart_experiment

__all__ = ["load_experiment", "quickstart_experiment"]
