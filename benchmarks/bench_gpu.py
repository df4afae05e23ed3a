"""The engine on GPUs: prepared for the day the project has one, smoke-tested on CPUs.

    .venv/bin/python benchmarks/bench_gpu.py                   # a CUDA machine, ~10 minutes
    .venv/bin/python benchmarks/bench_gpu.py --json gpu.json   # and every figure as JSON
    .venv/bin/python benchmarks/bench_gpu.py --smoke           # CPU, tiny sizes, seconds

Parts:
  engine  resnet56 on CIFAR-100-shaped data (random uint8 images, batch 64): the Trainer's
          epoch (DeviceLoader + objective + step, as runs.py builds it) in fp32 and bf16,
          without and with torch.compile, against a naive loop (fp32, contiguous layout,
          each batch copied from host memory, augmentation-free): images/s and the ratio.
  store   an experiment of a resnet56 teacher and two resnet20 students (KD, RKD) on
          digits, with the teacher-output store and without: wall time of each.
  stage   one stage of an experiment, one teacher run per GPU (--workers = GPUs), run
          in process one after another and with `--executor local`: wall time and ratio.

--smoke runs every part with tiny sizes on the CPU (resnet8, a few steps, no compile), so
that a test keeps the script working; its figures mean nothing. The results go to
docs/performance.md once measured on a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's icckd_cli

from harness import (  # noqa: E402
    BATCH,
    Setup,
    make_trainer,
    place,
    sgd,
    synthetic_cifar100,
    teacher_objective,
)

from icckd_cli.models import create_model  # noqa: E402


def median_seconds(fn: Callable[[], None], reps: int, sync: Callable[[], None]) -> float:
    """The median wall time of `fn` over `reps` calls, after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def setup(device: torch.device, precision: str, steps: int, reps: int) -> Setup:
    """The harness's settings for one engine variant."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return Setup(device, precision, device.type == "cuda", steps, reps, 1, False, 1.0, 0, 0, sync)


def engine_part(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Trainer epochs in fp32/bf16, without/with compile, against a naive loop: images/s."""
    s = setup(device, "fp32", args.steps, args.reps)
    spec, train = synthetic_cifar100(args.steps * BATCH, s)
    test = synthetic_cifar100(BATCH, s, seed=1)[1]
    images = args.steps * BATCH
    out: dict[str, Any] = {"arch": args.arch, "batch": BATCH, "steps": args.steps}

    host = train.to(torch.device("cpu"))
    model = create_model(args.arch, 100).to(device)
    opt = sgd(model.parameters())

    def naive() -> None:  # the loop of a first PyTorch tutorial
        for i in range(args.steps):
            x = host.images[i * BATCH : (i + 1) * BATCH].to(device).float().div_(255)
            y = host.labels[i * BATCH : (i + 1) * BATCH].to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    out["naive_fp32"] = images / median_seconds(naive, args.reps, s.sync)
    for precision in ("fp32", "bf16"):
        for compiled in (False, True) if not args.smoke else (False,):
            s = setup(device, precision, args.steps, args.reps)
            net = place(create_model(args.arch, 100), s)
            objective = teacher_objective(100, net.feature_dim, 0.0).to(device)
            step_model = torch.compile(net) if compiled else net
            trainer = make_trainer(step_model, objective, train, test, spec, s)

            def epoch(trainer: Any = trainer) -> None:
                trainer.state = type(trainer.state)()
                trainer.run()

            name = f"engine_{precision}{'_compile' if compiled else ''}"
            out[name] = images / median_seconds(epoch, args.reps, s.sync)
            out[f"{name}_vs_naive"] = out[name] / out["naive_fp32"]
    return out


STORE_EXPERIMENT = """\
[experiment]
name = "bench-gpu-store"
dataset = "digits"
train_per_class = {train}
test_per_class = 10
seeds = [0]
out = "{out}"
device = "{device}"
tensorboard = false
latency = false
teacher_cache = {cache}

[teacher]
arch = "{teacher}"
epochs = 1
batch_size = 64

[[teachers]]
name = "ce"
icc_weight = 0

[student]
arch = "{student}"
epochs = {epochs}
batch_size = 64

[[students]]
method = "kd"

[[students]]
method = "rkd"
"""


def store_part(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    """One teacher and two students with the teacher-output store and without: wall time."""
    from icckd_cli.commands.experiment import load_experiment
    from icckd_cli.commands.experiment.matrix import run_experiment

    out: dict[str, Any] = {}
    for cache in (True, False):
        folder = work / f"store-{cache}"
        config = work / f"store-{cache}.toml"
        config.write_text(
            STORE_EXPERIMENT.format(
                train=args.train_per_class,
                out=folder,
                device=device,
                cache=str(cache).lower(),
                teacher=args.arch,
                student=args.student,
                epochs=args.epochs,
            )  # fmt: skip
        )
        start = time.perf_counter()
        run_experiment(load_experiment(config), lambda e, i: None)
        out[f"wall_s_{'store' if cache else 'no_store'}"] = time.perf_counter() - start
    out["store_vs_no_store"] = out["wall_s_no_store"] / out["wall_s_store"]
    return out


STAGE_EXPERIMENT = """\
[experiment]
name = "bench-gpu-stage"
dataset = "digits"
train_per_class = {train}
test_per_class = 10
seeds = {seeds}
out = "{out}"
device = "{device}"
tensorboard = false
latency = false

[teacher]
arch = "{arch}"
epochs = {epochs}
batch_size = 64

[[teachers]]
name = "ce"
icc_weight = 0
"""


def stage_part(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    """One teacher run per GPU, in process one after another and on local workers."""
    from icckd_cli.commands.experiment import load_experiment
    from icckd_cli.commands.experiment.matrix import run_experiment

    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    runs = max(gpus, 2)
    out: dict[str, Any] = {"runs": runs, "gpus": gpus}
    for kind in ("inprocess", "local"):
        folder = work / f"stage-{kind}"
        config = work / f"stage-{kind}.toml"
        config.write_text(
            STAGE_EXPERIMENT.format(
                train=args.train_per_class,
                seeds=list(range(runs)),
                out=folder,
                device=device,
                arch=args.arch,
                epochs=args.epochs,
            )  # fmt: skip
        )
        executor = {"kind": kind, "workers": runs if kind == "local" else None}
        start = time.perf_counter()
        run_experiment(load_experiment(config, executor=executor), lambda e, i: None)
        out[f"wall_s_{kind}"] = time.perf_counter() - start
    out["local_vs_inprocess"] = out["wall_s_inprocess"] / out["wall_s_local"]
    return out


def main() -> None:
    """Run the parts and print (and optionally write) every figure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: keeps the script working")
    p.add_argument("--device", default=None, help="default: cuda where present, else cpu")
    p.add_argument("--parts", default="engine,store,stage")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.smoke:
        args.device = "cpu"
        args.arch, args.student, args.steps, args.reps = "resnet8", "resnet8", 2, 1
        args.train_per_class, args.epochs = 10, 1
        torch.set_num_threads(1)
    else:
        args.arch, args.student, args.steps, args.reps = "resnet56", "resnet20", 50, 5
        args.train_per_class, args.epochs = 150, 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    parts = args.parts.split(",")
    report: dict[str, Any] = {"device": str(device), "smoke": args.smoke}
    report["torch"] = torch.__version__
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    with tempfile.TemporaryDirectory(prefix="icckd-bench-gpu-") as tmp:
        if "engine" in parts:
            report["engine"] = engine_part(args, device)
        if "store" in parts:
            report["store"] = store_part(args, device, Path(tmp))
        if "stage" in parts:
            report["stage"] = stage_part(args, device, Path(tmp))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
