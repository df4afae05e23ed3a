"""Timing, machine description, CPU-noise monitoring and data preparation for the benchmarks.

Kept apart from the cases so `bench_training.py` reads as the list of what is measured.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo (or platform) reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """What a reader needs to compare figures between machines."""
    import torchvision

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (zeros where unavailable)."""
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------- CPU noise


def _busy_seconds() -> float | None:
    """CPU-seconds all processes spent busy since boot (None off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    # steal is time the hypervisor gave to other guests: noise for us just the same
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU-seconds this process and its reaped children (DataLoader workers) used."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class CpuMonitor:
    """Share of the machine's CPU time that other processes took while the block ran."""

    def __enter__(self) -> CpuMonitor:
        self.wall0, self.busy0, self.own0 = time.perf_counter(), _busy_seconds(), _own_seconds()
        self.load0 = load_average()[0]
        self.other_share: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.wall0
        busy1 = _busy_seconds()
        self.load1 = load_average()[0]
        if self.busy0 is None or busy1 is None or wall <= 0:
            return
        others = (busy1 - self.busy0) - (_own_seconds() - self.own0)
        self.other_share = max(0.0, others) / (wall * (os.cpu_count() or 1))


def wait_for_quiet(threshold: float, max_wait: float, window: float = 1.0) -> float:
    """Sleep until other processes use at most `threshold` of the CPUs over two windows.

    Gives up after `max_wait` seconds; returns the seconds waited.
    """
    start = time.perf_counter()
    quiet = 0
    while time.perf_counter() - start < max_wait and quiet < 2:
        with CpuMonitor() as mon:
            time.sleep(window)
        share = mon.other_share if mon.other_share is not None else 0.0
        quiet = quiet + 1 if share <= threshold else 0
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- timing


@dataclass
class Variant:
    """One thing to time: `run()` does the work once and may return its own seconds."""

    name: str
    run: Callable[[], float | None]
    images: int  # images processed by one call of run()


@dataclass
class Timing:
    """The seconds of every repetition of one variant."""

    name: str
    images: int
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        """Images per second at the median."""
        return self.images / self.median


def device_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for queued device work (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def interleave(
    variants: Sequence[Variant], warmup: int, reps: int, sync: Callable[[], None]
) -> dict[str, Timing]:
    """Time the variants in alternating order (A B C, C B A, ...) so drift hits each alike."""
    for _ in range(warmup):
        for v in variants:
            v.run()
    out = {v.name: Timing(v.name, v.images) for v in variants}
    for r in range(reps):
        for v in variants if r % 2 == 0 else list(reversed(variants)):
            sync()
            start = time.perf_counter()
            own = v.run()
            sync()
            out[v.name].seconds.append(own if own is not None else time.perf_counter() - start)
    return out


def pair_ratios(fast: Timing, slow: Timing) -> list[float]:
    """Speed of `fast` over `slow` within each repetition: slow_s / fast_s."""
    return [s / f for f, s in zip(fast.seconds, slow.seconds, strict=True)]


# ----------------------------------------------------------------------------- data


def prepare_cifar_subset(
    archive: Path, root: Path, train_per_class: int, test_per_class: int
) -> Path:
    """Unpack the CIFAR-10 JPEG archive once under `root`; a folder with the first N per class."""
    full = root / "cifar10-jpeg"
    if not (full / "train").is_dir():
        if not archive.is_file():
            raise SystemExit(
                f"CIFAR-10 JPEG archive {archive} not found; pass --archive PATH (the file "
                "cifar10-jpeg.tgz) or --cases without b"
            )
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "xzf", str(archive), "-C", str(root)], check=True)
    sub = root / f"cifar10-sub-{train_per_class}-{test_per_class}"
    if not (sub / "done").is_file():
        for split, limit in (("train", train_per_class), ("test", test_per_class)):
            for class_dir in sorted(p for p in (full / split).iterdir() if p.is_dir()):
                dest = sub / split / class_dir.name
                dest.mkdir(parents=True, exist_ok=True)
                for f in sorted(class_dir.iterdir())[:limit]:
                    # copy2 keeps mtimes, so the decoded-data cache key stays stable
                    shutil.copy2(f, dest / f.name)
        (sub / "done").write_text("ok\n")
    return sub
