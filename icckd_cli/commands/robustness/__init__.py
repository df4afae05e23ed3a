"""Corruption robustness scored: a model under corruptions (scoring.py: `eval --corruptions`)
and an experiment's finished students (students.py: `corruptions = true`).

The corrupted images come from data/ (data/corruptions.py, data/cifar_c.py). Nothing is
imported here, so an experiment that measures no corruptions never loads them.
"""
