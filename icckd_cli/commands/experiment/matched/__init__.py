"""Accuracy-matched teachers: students distill from each teacher's epoch that reaches the
weakest teacher's best validation top-1, so a student gain is not a teacher-accuracy gain.

rule.py picks the epochs from validation curves; plan.py puts the rule into the matrix (the
checks, each student's teacher, the results); tables.py renders the matched epochs and the
teacher gap; snapshots.py holds the two hooks of a run (a teacher keeping each evaluated
epoch, a student recording the snapshot it read). The snapshot file format is
training/snapshots.py. Nothing is imported here, so a run that needs one hook loads only it.
"""
