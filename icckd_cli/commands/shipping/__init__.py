"""Shipping a model: what it costs to run (cost.py) and leaving PyTorch with a check (export.py).

`icckd eval` and `icckd experiment` use cost.py; `icckd export` uses export.py, whose parity
check (the export run on real images and compared with the checkpoint) is part of exporting.
"""
