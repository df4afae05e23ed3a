"""Negative transfer, robustness and long-tail numbers of an experiment (measures.py) and the
negative-transfer table of its results (table.py).

Nothing is imported here: the table is rendered from results.json's form by markdown.py,
which the measures' statistics (results.py) import in turn.
"""
