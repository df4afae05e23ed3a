"""What does checking a checkpoint's digest cost? Loading a resnet110 and a ViT-B, with and without.

    .venv/bin/python benchmarks/bench_checkpoint_verify.py              # ~2 minutes on 2 cores
    .venv/bin/python benchmarks/bench_checkpoint_verify.py --reps 9 --threads 2

Each model (random weights, built without downloading anything) is saved through the
project's save path (`save_model`: the header records `data_sha256`), then loaded into the
model three ways (tensors, then `load_state_dict`, as `load_any_model` does), interleaved after
a warm-up round, the file in the page cache:
- mmap: `safetensors.torch.load_file`, what the readers used before digests (no check);
- read: the whole file read once and deserialised from those bytes, without the digest;
- verified: `Checkpoint.read(path).tensors()`, what every reader runs now (read, sha256
  of the tensor data, deserialise).
Timed by this process's CPU time (the work is single-threaded copying and hashing, and on a
shared machine the wall clock mostly measures the other processes), with the wall time
beside it. Medians over `--reps`; the ratios are of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load, load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's icckd_cli

from icckd_cli.base.checkpoint import Checkpoint, save_model  # noqa: E402
from icckd_cli.models import create_model  # noqa: E402

MODELS = {"resnet110": 100, "timm:vit_base_patch16_224": 1000}  # arch: classes


def _mmap(path: Path) -> object:
    return load_file(str(path))


def _read(path: Path) -> object:
    return load(path.read_bytes())


def _verified(path: Path) -> object:
    return Checkpoint.read(path).tensors()


WAYS: dict[str, Callable[[Path], object]] = {"mmap": _mmap, "read": _read, "verified": _verified}


def time_loads(
    path: Path, model: torch.nn.Module, reps: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median CPU and wall seconds of each way of loading `path` into `model`, interleaved."""
    for way in WAYS.values():
        model.load_state_dict(way(path))  # type: ignore[arg-type]
    cpu: dict[str, list[float]] = {name: [] for name in WAYS}
    wall: dict[str, list[float]] = {name: [] for name in WAYS}
    for rep in range(reps):
        order = list(WAYS) if rep % 2 == 0 else list(reversed(WAYS))
        for name in order:
            c, w = time.process_time(), time.perf_counter()
            model.load_state_dict(WAYS[name](path))  # type: ignore[arg-type]
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
    med = statistics.median
    return {n: med(t) for n, t in cpu.items()}, {n: med(t) for n, t in wall.items()}


def main() -> None:
    """Save each model, time its loads, print one line per model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    print(f"torch {torch.__version__}, {opts.threads} threads, median of {opts.reps}")
    with tempfile.TemporaryDirectory(prefix="icckd-bench-ckpt-") as tmp:
        for arch, classes in MODELS.items():
            torch.manual_seed(0)
            model = create_model(arch, classes)
            path = Path(tmp) / "model.safetensors"
            meta = {"kind": "teacher", "arch": arch, "num_classes": classes, "config": {}}
            save_model(path, model, meta)
            t, w = time_loads(path, model, opts.reps)
            size = path.stat().st_size / 1e6
            print(
                f"{arch} ({size:.1f} MB), CPU ms: mmap {t['mmap'] * 1e3:.1f}, "
                f"read {t['read'] * 1e3:.1f}, verified {t['verified'] * 1e3:.1f}; "
                f"verified/read {t['verified'] / t['read']:.2f}x, "
                f"verified/mmap {t['verified'] / t['mmap']:.2f}x; wall ms: mmap "
                f"{w['mmap'] * 1e3:.1f}, read {w['read'] * 1e3:.1f}, verified "
                f"{w['verified'] * 1e3:.1f}"
            )
            path.unlink()


if __name__ == "__main__":
    main()
