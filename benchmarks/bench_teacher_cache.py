"""Does the teacher-output store pay? One three-student experiment, with and without it.

    .venv/bin/python benchmarks/bench_teacher_cache.py             # ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_teacher_cache.py --quick     # ~3 min
    .venv/bin/python benchmarks/bench_teacher_cache.py --data random

The experiment: a resnet56 cross-entropy teacher and resnet20 students with KD, RKD and
CRD on CIFAR-shaped data (32x32 CIFAR-10 JPEGs, or random images), one seed; run as
`icckd experiment` with `teacher_cache = true` (float16, the default) and `false`,
interleaved (with, without, without, with, ...) in fresh folders so that noise hits both.
Reported: the students' training-epoch seconds (metrics.jsonl `time`: the steps alone,
without evaluation; the store's own teacher pass is outside them), the whole experiment's
wall time (teacher, store pass, students, evaluation, results) and the store's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import CpuMonitor, load_average, prepare_cifar_subset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARCHIVES = [ROOT.parent / "shared/datasets/cifar10-jpeg.tgz", ROOT / ".data/cifar10-jpeg.tgz"]
METHODS = ("kd", "rkd", "crd")

EXPERIMENT = """\
[experiment]
name = "bench-teacher-cache"
dataset = "imagefolder"
data_dir = "{data}"
test_per_class = {test}
seeds = [0]
out = "{out}"
device = "cpu"
tensorboard = false
teacher_cache = {cache}

[teacher]
arch = "resnet56"
epochs = 1
batch_size = 64

[[teachers]]
name = "ce"
icc_weight = 0

[student]
arch = "resnet20"
epochs = {epochs}
batch_size = 64
train_per_class = {train}

[[students]]
method = "kd"

[[students]]
method = "rkd"

[[students]]
method = "crd"
"""


def random_images(root: Path, per_class: int, test: int) -> Path:
    """An imagefolder of random 32x32 PNGs, 10 classes (made once)."""
    import numpy as np
    from PIL import Image

    folder = root / f"random-{per_class}-{test}"
    if (folder / "done").is_file():
        return folder
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test)):
        for c in range(10):
            dest = folder / split / f"class{c}"
            dest.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(dest / f"{i}.png")
    (folder / "done").write_text("ok\n")
    return folder


def run_once(data: Path, work: Path, cache: bool, args: argparse.Namespace, env: dict) -> dict:
    """One whole experiment in a fresh folder: wall seconds, student epoch seconds, store size."""
    out = work / f"exp-{'cache' if cache else 'plain'}"
    shutil.rmtree(out, ignore_errors=True)
    config = work / f"{out.name}.toml"
    config.write_text(
        EXPERIMENT.format(
            data=data,
            out=out,
            cache=str(cache).lower(),
            epochs=args.epochs,
            train=args.train_per_class,
            test=args.test_per_class,
        )
    )
    cmd = [sys.executable, "-m", "icckd_cli", "experiment", str(config), "--format", "json"]
    with CpuMonitor() as mon:
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the experiment failed:\n{done.stderr[-3000:]}")
    epochs = {}
    for m in METHODS:
        rows = (out / f"students/ce/{m}/seed0/metrics.jsonl").read_text().splitlines()
        epochs[m] = [json.loads(r)["time"] for r in rows]
    store = out / "teacher_cache"
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) if store.is_dir() else 0
    return {
        "cache": cache,
        "wall_s": wall,
        "epoch_s": epochs,
        "store_bytes": size,
        "others_share": mon.other_share,
        "load": mon.load1,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", choices=("jpeg", "random"), default="jpeg")
    p.add_argument("--archive", type=Path, default=None, help="cifar10-jpeg.tgz")
    p.add_argument("--data-root", type=Path, default=Path(tempfile.gettempdir()) / "icckd-bench")
    p.add_argument("--train-per-class", type=int, default=50)
    p.add_argument("--test-per-class", type=int, default=10)
    p.add_argument("--epochs", type=int, default=3, help="student epochs")
    p.add_argument("--repeats", type=int, default=2, help="pairs (with, without)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="30 images a class, 2 epochs, 1 pair")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.quick:
        args.train_per_class, args.epochs, args.repeats = 30, 2, 1
    if args.data == "jpeg":
        archive = args.archive or next((a for a in ARCHIVES if a.is_file()), ARCHIVES[0])
        # the teacher's set, which the students subset with train_per_class
        data = prepare_cifar_subset(archive, args.data_root, 100, args.test_per_class)
    else:
        data = random_images(args.data_root, 100, args.test_per_class)
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    env["ICCKD_CACHE_DIR"] = str(args.data_root / "icckd-cache")  # decoded once, for both
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    print(f"data {data} ({args.data}), {args.train_per_class} images a class for the students,"
          f" {args.epochs} student epochs, {args.threads} thread(s), load {load_average()[0]:.1f}")  # fmt: skip
    run_once(data, work, False, argparse.Namespace(**{**vars(args), "epochs": 1}), env)  # warm-up
    results: list[dict[str, Any]] = []
    order = [
        c for i in range(args.repeats) for c in ((True, False) if i % 2 == 0 else (False, True))
    ]
    for cache in order:
        r = run_once(data, work, cache, args, env)
        results.append(r)
        per = {m: statistics.median(v) for m, v in r["epoch_s"].items()}
        print(f"  {'with' if cache else 'without':>7} the store: whole {r['wall_s']:6.1f} s, "
              "student epoch (median) " + ", ".join(f"{m} {v:.2f} s" for m, v in per.items())
              + f", others took {100 * (r['others_share'] or 0):.0f}% of the CPUs")  # fmt: skip
    with_ = [r for r in results if r["cache"]]
    without = [r for r in results if not r["cache"]]
    summary: dict[str, Any] = {
        "epoch_ratio": {},
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    for m in METHODS:
        a = statistics.median(e for r in without for e in r["epoch_s"][m])
        b = statistics.median(e for r in with_ for e in r["epoch_s"][m])
        summary["epoch_ratio"][m] = {"without_s": a, "with_s": b, "ratio": a / b}
    a_all = sum(statistics.median(e for r in without for e in r["epoch_s"][m]) for m in METHODS)
    b_all = sum(statistics.median(e for r in with_ for e in r["epoch_s"][m]) for m in METHODS)
    summary["student_epochs_ratio"] = a_all / b_all
    summary["whole_ratio"] = statistics.median(r["wall_s"] for r in without) / statistics.median(
        r["wall_s"] for r in with_
    )
    summary["store_bytes"] = with_[0]["store_bytes"]
    summary["runs"] = results
    print("student epoch, without / with the store (median seconds):")
    for m, v in summary["epoch_ratio"].items():
        print(f"  {m:>4}: {v['without_s']:.2f} / {v['with_s']:.2f} = {v['ratio']:.2f}x")
    print(f"  all three: {summary['student_epochs_ratio']:.2f}x (target >= 1.7x)")
    print(f"whole experiment, without / with: {summary['whole_ratio']:.2f}x")
    print(f"store: {summary['store_bytes'] / 1e6:.2f} MB (float16)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
