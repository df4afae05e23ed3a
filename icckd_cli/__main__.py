"""`python -m icckd_cli` (and `torchrun -m icckd_cli`) runs the CLI."""

from icckd_cli.cli import main

main()
