"""A local worker: `python -m icckd_cli.commands.executor.worker` runs pickled jobs, one at a time.

It reads lines `JOB<TAB>LOG` on stdin, runs the job pickled in JOB with its output going to
LOG, and writes the exit code to JOB.end: 0 done, the error's code (1, or 2 for bad
settings) after a one-line `error:` in the log, 1 after a traceback. The process lives
as long as its pool, so torch is imported and a data set decoded once per worker rather
than once per run. SIGTERM stops the run in progress (its state is saved) and the worker.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from pathlib import Path

from icckd_cli.base.atomic import write_text_atomic
from icckd_cli.base.errors import INTERRUPTED, IcckdError, Interrupted

END = ".end"  # beside the job file: its exit code


def run(job_file: Path) -> int:
    """Run one pickled job; print its outcome and return its exit code."""
    job = pickle.loads(job_file.read_bytes())
    try:
        print(f"{job.label}: {job()}", flush=True)
    except IcckdError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code
    except Interrupted:
        print(f"{job.label}: interrupted; its state is saved", file=sys.stderr, flush=True)
        return INTERRUPTED
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def serve() -> None:
    """Run the jobs named on stdin until it closes, each with its output in its log."""
    saved = os.dup(1), os.dup(2)
    for line in sys.stdin:
        job_file, log = (Path(p) for p in line.rstrip("\n").split("\t"))
        with open(log, "ab") as out:
            _point_output_at(out.fileno())
            try:
                code = run(job_file)
            finally:
                _point_output_at(*saved)
        write_text_atomic(job_file.with_name(job_file.name + END), f"{code}\n")
        if code == INTERRUPTED:  # SIGTERM or Ctrl-C: the pool is stopping
            return


def _point_output_at(out: int, err: int | None = None) -> None:
    """This process's stdout and stderr (the file descriptors, so C code's output too)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out, 1)
    os.dup2(out if err is None else err, 2)


if __name__ == "__main__":
    serve()
