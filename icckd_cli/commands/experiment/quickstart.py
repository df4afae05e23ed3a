"""The built-in experiment of `icckd quickstart`."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from icckd_cli.commands.experiment.config import parse_experiment
from icckd_cli.commands.experiment.plan import Experiment

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The same text as examples/quickstart.toml (a test keeps them equal); embedded so that
# `icckd quickstart` works from an installed package without the repository.
QUICKSTART_TOML = """\
# The built-in experiment of `icckd quickstart`, the paper's comparison in miniature on the
# embedded digits data set (no download): two resnet8 teachers trained on all of digits,
# one with cross-entropy alone and one with the intra-class contrastive term; resnet8
# students that see only 15 training images per class, distilled with KD from each
# teacher and trained alone as the baseline; 4 student seeds over 2 teacher seeds (teachers
# cost most; student seeds 0 and 2 distill from the teachers of seed 0, 1 and 3 from seed
# 1). Distillation shows its value where the student has little labelled data, so the first
# table answers what KD from each teacher adds over the student alone. About 4 minutes on
# 2 quiet CPU cores.
#
#     icckd quickstart                              (this file is built in)
#     icckd experiment examples/quickstart.toml     (the same, from the file)
#
# Runs go under ./icckd-quickstart/; running the command again skips finished runs.

[experiment]
name = "quickstart"
dataset = "digits"
seeds = [0, 1, 2, 3]
teacher_seeds = [0, 1]
out = "icckd-quickstart"
# every student seed draws its own batches and runs its teacher, as when the results in
# README.md and docs/results.md were measured (a shared teacher cache would fix the data
# order of students 0 and 2 to their teacher's seed, and store float16 outputs)
teacher_cache = false

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
epochs = 30
eval_every = 5  # 150 images train fast; six evaluations of the 360 test images suffice
save_every = 5
batch_size = 16  # 150 images: 9 steps an epoch, where 64 would leave 2 and undertrain
train_per_class = 15  # the students and the student alone; the teachers see all of digits
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
