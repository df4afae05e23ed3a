"""The streamed ImageNet loader (issue 12): throughput against torchvision, memory vs size.

1. Images per second delivered as normalised 224 px training batches by `StreamLoader`
   (2 workers) against torchvision `ImageFolder` + `RandomResizedCrop`/`RandomHorizontalFlip`/
   `ToTensor`/`Normalize` in a `DataLoader` with the same workers, batch and folder. Runs
   alternate (A B B A ...); medians are compared. Target: ours >= 1.0x.
2. Peak resident memory of a one-epoch `icckd train-teacher --dataset imagenet` run over a
   2,000-image folder of 256 px JPEGs against a 200-image one (each measured in its own
   process: the largest of the run's processes, ru_maxrss). Target: <= 1.2x.

    python benchmarks/bench_stream.py                 # about 3 minutes on 2 CPU cores
    python benchmarks/bench_stream.py --only speed    # or: --only memory

Folders of generated JPEGs go under --root (/tmp/icckd-bench-stream), never the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_folder(root: Path, classes: int, per_class: int, w: int, h: int, val: int = 10) -> Path:
    """train/ and val/ class folders of photo-like JPEGs (smooth noise), made once."""
    from PIL import Image

    done = root / ".done"
    if done.is_file():
        return root
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val)):
        for c in range(classes):
            folder = root / split / f"class{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                small = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
                im = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
                im.save(folder / f"{k:05d}.jpg", quality=90)
    done.write_text("")
    return root


def stream_epoch(folder: Path, workers: int, batch: int, size: int) -> tuple[int, float]:
    """(images, seconds) of one epoch of StreamLoader batches, normalised floats."""
    from icckd_cli.data import LoadOptions, load_dataset, make_loader

    ds = load_dataset("imagenet", folder, options=LoadOptions(image_size=size, workers=workers))
    loader = make_loader(ds.train, ds.spec, batch, seed=int(time.time()))
    start, n = time.perf_counter(), 0
    for b in loader.epoch(0):
        n += b.views[0].shape[0]
    return n, time.perf_counter() - start


def torchvision_epoch(folder: Path, workers: int, batch: int, size: int) -> tuple[int, float]:
    """(images, seconds) of one epoch of the usual torchvision pipeline."""
    import torch
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    data = datasets.ImageFolder(str(folder / "train"), tf)
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True
    )
    start, n = time.perf_counter(), 0
    for x, _ in loader:
        n += x.shape[0]
    return n, time.perf_counter() - start


def speed(args: argparse.Namespace) -> dict:
    """Interleaved epochs of both loaders; medians of images per second."""
    import torch

    torch.set_num_threads(1)
    folder = make_folder(args.root / "speed", 8, args.speed_per_class, 500, 375)
    runs: dict[str, list[float]] = {"icckd StreamLoader": [], "torchvision ImageFolder": []}
    fns = {"icckd StreamLoader": stream_epoch, "torchvision ImageFolder": torchvision_epoch}
    order = list(fns)
    for rep in range(args.reps + 1):
        for name in order if rep % 2 else reversed(order):
            n, s = fns[name](folder, args.workers, 32, 224)
            if rep:  # the first round warms the page cache
                runs[name].append(n / s)
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = med["icckd StreamLoader"] / med["torchvision ImageFolder"]
    for k, v in runs.items():
        print(f"{k:26s} {med[k]:7.1f} images/s  (runs: {', '.join(f'{x:.1f}' for x in v)})")
    print(f"ratio ours / torchvision: {ratio:.2f}x (target >= 1.0x)")
    return {"images_per_s": med, "runs": runs, "ratio": ratio}


def peak_rss(cmd: list[str]) -> float:
    """MiB: the largest resident set of `cmd`'s processes, measured in a fresh process."""
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return int(out.stdout.strip()) / 1024


def memory(args: argparse.Namespace) -> dict:
    """Peak RSS of one-epoch runs over 200 and 2,000 images of 256 px."""
    env_cmd = [sys.executable, "-m", "icckd_cli", "train-teacher", "--dataset", "imagenet",
               "--arch", "resnet8", "--image-size", str(args.mem_size), "--epochs", "1",
               "--batch-size", "32", "--workers", str(args.workers), "--device", "cpu",
               "--overwrite", "--icc-weight", "0"]  # fmt: skip
    result = {}
    for n in (200, 2000):
        folder = make_folder(args.root / f"mem{n}", 10, n // 10, 256, 256, val=2)
        out = args.root / f"run{n}"
        start = time.perf_counter()
        mib = peak_rss([*env_cmd, "--data-dir", str(folder), "--out", str(out)])
        result[n] = mib
        print(f"{n:5d} images: peak RSS {mib:7.1f} MiB ({time.perf_counter() - start:.0f} s)")
    ratio = result[2000] / result[200]
    print(f"ratio 2,000 / 200 images: {ratio:.3f}x (target <= 1.2x)")
    return {"peak_rss_mib": result, "ratio": ratio}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("/tmp/icckd-bench-stream"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--speed-per-class", type=int, default=40, help="8 classes of 500x375")
    p.add_argument("--mem-size", type=int, default=64, help="crop size of the memory runs")
    p.add_argument("--only", choices=["speed", "memory"])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    os.environ.setdefault("ICCKD_CACHE_DIR", str(args.root / "cache"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    report = {"workers": args.workers, "cpus": os.cpu_count()}
    if args.only in (None, "speed"):
        report["speed"] = speed(args)
    if args.only in (None, "memory"):
        report["memory"] = memory(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
