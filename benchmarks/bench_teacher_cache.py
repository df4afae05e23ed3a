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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's icckd_cli

from benchlib import CpuMonitor, load_average, prepare_cifar_subset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARCHIVES = [
    ROOT.parent / name / "datasets/cifar10-jpeg.tgz" for name in ("shared", "../shared")
] + [ROOT / ".data/cifar10-jpeg.tgz"]
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


class Clock:
    """Per student epoch: wall and CPU seconds of its steps (evaluation excluded)."""

    def __init__(self) -> None:
        self.label = ""
        self.epochs: dict[str, list[tuple[float, float]]] = {}
        self.store_bytes = 0
        self.mark = (0.0, 0.0)
        self.last = (0.0, 0.0)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        now = (time.perf_counter(), time.process_time())
        if event == "run":
            self.label = info["label"]
        elif event == "teacher_cache" and info["action"] == "write":
            self.store_bytes += info["bytes"]
        elif event == "start":
            self.mark = now
        elif event == "step":
            self.last = now
        elif event == "epoch":  # after the evaluation: the last step ended the epoch's steps
            spent = (self.last[0] - self.mark[0], self.last[1] - self.mark[1])
            self.epochs.setdefault(self.label, []).append(spent)
            self.mark = now


def run_once(data: Path, work: Path, cache: bool, args: argparse.Namespace) -> dict:
    """One whole experiment in a fresh folder, in this process."""
    from icckd_cli.commands.experiment.config import load_experiment
    from icckd_cli.commands.experiment.matrix import run_experiment

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
    clock = Clock()
    with CpuMonitor() as mon:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        run_experiment(load_experiment(config), clock)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    epochs = {m: clock.epochs[f"students/ce/{m}/seed0"] for m in METHODS}
    return {
        "cache": cache,
        "wall_s": wall,
        "cpu_s": cpu,
        "epoch_wall_s": {m: [w for w, _ in v] for m, v in epochs.items()},
        "epoch_cpu_s": {m: [c for _, c in v] for m, v in epochs.items()},
        "store_bytes": clock.store_bytes,
        "others_share": mon.other_share,
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
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True)
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
    os.environ["ICCKD_CACHE_DIR"] = str(args.data_root / "icckd-cache")  # decoded once
    import torch

    torch.set_num_threads(args.threads)
    load = load_average()[0]
    print(f"data {data} ({args.data}), {args.train_per_class} images a class for the students,"
          f" {args.epochs} student epochs, {args.threads} thread(s), load {load:.1f}")  # fmt: skip
    if args.warmup:  # decodes the images into the cache and warms torch up, untimed
        run_once(data, work, True, argparse.Namespace(**{**vars(args), "epochs": 1}))
    results: list[dict[str, Any]] = []
    order = [
        c for i in range(args.repeats) for c in ((True, False) if i % 2 == 0 else (False, True))
    ]
    for cache in order:
        r = run_once(data, work, cache, args)
        results.append(r)
        per = {m: statistics.median(v) for m, v in r["epoch_cpu_s"].items()}
        print(f"  {'with' if cache else 'without':>7} the store: whole {r['wall_s']:6.1f} s wall, "
              f"{r['cpu_s']:6.1f} s CPU; student epoch CPU (median) "
              + ", ".join(f"{m} {v:.2f} s" for m, v in per.items())
              + f"; others took {100 * (r['others_share'] or 0):.0f}% of the CPUs")  # fmt: skip
    with_ = [r for r in results if r["cache"]]
    without = [r for r in results if not r["cache"]]
    summary: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}

    def med(rs: list[dict], key: str, m: str) -> float:
        return statistics.median(e for r in rs for e in r[key][m])

    for key in ("epoch_cpu_s", "epoch_wall_s"):
        summary[key] = {}
        for m in METHODS:
            a, b = med(without, key, m), med(with_, key, m)
            summary[key][m] = {"without": a, "with": b, "ratio": a / b}
        a = sum(med(without, key, m) for m in METHODS)
        b = sum(med(with_, key, m) for m in METHODS)
        summary[key]["all"] = {"without": a, "with": b, "ratio": a / b}
    for key in ("wall_s", "cpu_s"):
        a = statistics.median(r[key] for r in without)
        b = statistics.median(r[key] for r in with_)
        summary[f"whole_{key}"] = {"without": a, "with": b, "ratio": a / b}
    summary["store_bytes"] = with_[0]["store_bytes"]
    summary["runs"] = results
    for key, what in (("epoch_cpu_s", "CPU"), ("epoch_wall_s", "wall")):
        print(f"student epoch {what} seconds, without / with the store (medians):")
        for m, v in summary[key].items():
            print(f"  {m:>4}: {v['without']:.2f} / {v['with']:.2f} = {v['ratio']:.2f}x")
    for key, what in (("whole_cpu_s", "CPU"), ("whole_wall_s", "wall")):
        v = summary[key]
        print(
            f"whole experiment {what}: {v['without']:.1f} / {v['with']:.1f} s = {v['ratio']:.2f}x"
        )
    size = summary["store_bytes"] / 1e6
    print(f"store: {size:.2f} MB (float16; deleted once its students finished)")
    print("target: student epochs >= 1.7x faster with the store")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
