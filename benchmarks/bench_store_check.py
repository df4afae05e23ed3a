"""What does checking a teacher-output store cost? Its checksums written, then verified.

    .venv/bin/python benchmarks/bench_store_check.py                 # 50,000 x 10 x 100, ~1 min
    .venv/bin/python benchmarks/bench_store_check.py --epochs 240    # the full CIFAR-100 store

A CIFAR-100-shaped store (50,000 rows an epoch, 100 float16 logits a row, no features,
batches of 128) is written with random logits as the writer lays it out; then timed, each
`--repeat` times, median reported:
- write: the checksums the writer computes before complete.json (its pages still cached);
- warm check: `verify`, what a student runs before its first step, the files in the page
  cache (the usual case: the store was just written, or read by the previous student);
- cold check: the same after the store's own pages are evicted (posix_fadvise DONTNEED on
  its files alone, no global cache drop), so the disk read is included;
- cold read: reading the files without hashing, to tell the disk's share from the hash's.
The figures are extrapolated to the full 240-epoch store (2.5 GB) per byte, since the check
reads every byte once, in 64 MiB chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's icckd_cli

from benchlib import load_average  # noqa: E402

from icckd_cli.training.store.format import (  # noqa: E402
    COMPLETE,
    FORMAT_VERSION,
    HEADER,
    Layout,
    checksums,
    verify,
)

FULL_EPOCHS = 240


def build(folder: Path, layout: Layout, seed: int = 0) -> list[str]:
    """A complete store of random float16 logits, as the writer lays it out; its stems."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    stems = []
    for stem, (shape, dtype) in layout.arrays().items():
        arr = np.lib.format.open_memmap(folder / f"{stem}.npy", "w+", dtype=dtype, shape=shape)
        for e in range(shape[0]):
            if stem == "index":
                arr[e] = rng.permutation(shape[1])
            else:
                arr[e] = rng.standard_normal(shape[1:], dtype=np.float32).astype(dtype)
        arr.flush()
        del arr
        stems.append(stem)
    header = {"format": "icckd-teacher-cache", "format_version": FORMAT_VERSION}
    header["layout"] = asdict(layout)
    (folder / HEADER).write_text(json.dumps(header) + "\n")
    return stems


def evict(folder: Path) -> None:
    """Drop this store's pages from the page cache (its files only)."""
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_all(folder: Path, stems: list[str]) -> None:
    """Read every array file once, 64 MiB at a time, without hashing."""
    buf = memoryview(bytearray(1 << 26))
    for stem in stems:
        with (folder / f"{stem}.npy").open("rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def timed(fn: object, repeat: int, before: object = None) -> tuple[float, float]:
    """Median (wall, CPU) seconds of fn() over `repeat` runs, `before()` untimed ahead of each.

    On a shared machine the CPU seconds are the fair figure: wall time includes waiting for
    the cores (the cold runs also wait for the disk, which CPU time leaves out).
    """
    wall, cpu = [], []
    for _ in range(repeat):
        if before is not None:
            before()  # type: ignore[operator]
        t, c = time.perf_counter(), time.process_time()
        fn()  # type: ignore[operator]
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to build it (default: /tmp)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    steps = -(-a.rows // a.batch_size)
    layout = Layout(a.epochs, steps, a.rows, a.batch_size, a.classes, 0, "float16", None, False)
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        folder = Path(tmp) / "store"
        stems = build(folder, layout)
        nbytes = sum((folder / f"{s}.npy").stat().st_size for s in stems)
        read_all(folder, stems)  # warm
        load = load_average()
        sums: dict = {}

        def write() -> None:
            sums.update(checksums(folder, stems))

        write_s = timed(write, a.repeat)
        (folder / COMPLETE).write_text(json.dumps({"checksums": sums}) + "\n")
        done = json.loads((folder / COMPLETE).read_text())
        warm = timed(lambda: verify(folder, stems, done), a.repeat)
        cold = timed(lambda: verify(folder, stems, done), a.repeat, lambda: evict(folder))
        cold_read = timed(lambda: read_all(folder, stems), a.repeat, lambda: evict(folder))
    full = nbytes / a.epochs * FULL_EPOCHS
    scale = full / nbytes
    rows = {"checksums at write (warm)": write_s, "check, warm": warm, "check, cold": cold,
            "read alone, cold": cold_read}  # fmt: skip
    result = {
        "rows": a.rows, "epochs": a.epochs, "classes": a.classes, "bytes": nbytes,
        "load_average": load, "full_store_bytes": full,
        "seconds": {k: {"wall": w, "cpu": c} for k, (w, c) in rows.items()},
        "full_check_s": {"warm_wall": warm[0] * scale, "warm_cpu": warm[1] * scale,
                         "cold_wall": cold[0] * scale, "cold_cpu": cold[1] * scale},
    }  # fmt: skip
    gb = nbytes / 1e9
    print(f"store: {a.rows:,} rows x {a.epochs} epochs x {a.classes} float16 logits + index"
          f" = {gb:.3f} GB; load average {load[0]:.2f}")  # fmt: skip
    print(f"  {'':26s} {'wall s':>8s} {'CPU s':>8s} {'GB/s wall':>10s} {'GB/s CPU':>9s}")
    for name, (w, c) in rows.items():
        print(f"  {name:26s} {w:8.3f} {c:8.3f} {gb / w:10.2f} {gb / max(c, 1e-9):9.2f}")
    print(
        f"the {FULL_EPOCHS}-epoch store ({full / 1e9:.2f} GB), extrapolated: check "
        f"{warm[0] * scale:.1f} s wall / {warm[1] * scale:.1f} s CPU warm, "
        f"{cold[0] * scale:.1f} s wall / {cold[1] * scale:.1f} s CPU cold"
    )
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
