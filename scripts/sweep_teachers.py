"""Sweep the intra-class weight (and the gate) of a teacher at a fixed seed.

Trains one teacher per setting with `icckd train-teacher`, measures its soft labels with
`icckd inspect-softlabels`, and prints a Markdown table. Usage:

    python scripts/sweep_teachers.py OUT -- --arch resnet8 --dataset digits --epochs 10

Everything after `--` is passed to every train-teacher run. Finished runs are reused.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = [  # (name, icc_weight, margin)
    ("ce", 0.0, 0.5),
    ("icc0.05", 0.05, 0.5),
    ("icc0.2", 0.2, 0.5),
    ("icc0.5", 0.5, 0.5),
    ("icc0.2-nogate", 0.2, -1.0),
    ("icc0.5-nogate", 0.5, -1.0),
]


def icckd(*args: str) -> str:
    """Run the CLI and return stdout; stop the sweep on any failure."""
    done = subprocess.run([sys.executable, "-m", "icckd_cli", *args], capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode:
        sys.exit(f"icckd {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def main() -> None:
    """Train, inspect, tabulate."""
    out = Path(sys.argv[1])
    common = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    rows = []
    for name, weight, margin in SETTINGS:
        run = out / name
        start = time.perf_counter()
        if not (run / "model.safetensors").exists():
            icckd("train-teacher", *common, "--icc-weight", str(weight), "--margin", str(margin),
                  "--out", str(run), "--overwrite", "--format", "json")  # fmt: skip
        wall = time.perf_counter() - start
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        last = history[-1]
        stats = json.loads(icckd("inspect-softlabels", str(run / "model.safetensors"),
                                 "--format", "json"))["checkpoints"][0]["overall"]  # fmt: skip
        train_s = sum(r["time"] for r in history)
        rows.append((name, weight, margin, history, stats, train_s, wall))
    print("| teacher | lambda | delta | top-1 last | best | gate pass (last ep.) | "
          "intra/inter soft labels | intra/inter features | p(target) | NC1 | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, weight, margin, history, s, train_s, _ in rows:
        last, best = history[-1], max(r["top1"] for r in history)
        gate = last.get("train_icc_gate_pass")
        print(f"| {name} | {weight:g} | {margin:g} | {last['top1']:.2f} | {best:.2f} | "
              f"{'-' if gate is None else f'{gate:.2f}'} | {s['ratio']:.4f} | "
              f"{s['feature_ratio']:.4f} | {s['target_prob']:.3f} | {s['nc1']:.3f} | "
              f"{train_s:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
