"""A local worker: `python -m icckd_cli.work.executor.worker JOB` runs one pickled RunJob.

Its output is the run's log; a user error ends it with one line and exit code 1 (2 for
bad settings), anything else with the traceback, which the log keeps.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from icckd_cli.base.errors import IcckdError


def main(path: str) -> int:
    """Run the job pickled in `path`; the exit code says how it ended."""
    job = pickle.loads(Path(path).read_bytes())
    try:
        print(f"{job.label}: {job()}", flush=True)
    except IcckdError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
