"""What zoo models cost to run, what the cost table adds to the quickstart, and export times.

    python benchmarks/bench_shipping.py                       # 2 threads, 32x32, CPU
    python benchmarks/bench_shipping.py --archs resnet8,resnet56 --threads 1
    python benchmarks/bench_shipping.py --no-export --no-quickstart

Prints one row per architecture (params, MACs at --image-size, batch-1 latency and
throughput at --batch-size, as `icckd eval --latency` measures them), the time the
accuracy-against-cost table adds to `icckd quickstart` (measure_costs and the figure on a
finished quickstart of untrained resnet8 checkpoints), and how long each ONNX exporter of
torch takes on resnet8 and tv_mobilenet_v2 (the reason the TorchScript-based one is the
default). Figures: docs/shipping.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import cpu_model  # noqa: E402

DEFAULT_ARCHS = ("resnet8,resnet20,resnet56,resnet8x4,resnet32x4,wrn_16_2,wrn_40_2,vgg8,"
                 "MobileNetV2,ShuffleV2,tv_resnet18,tv_mobilenet_v2")  # fmt: skip


def cost_rows(archs: list[str], size: int, classes: int, batch: int) -> None:
    from icckd_cli.base.units import si
    from icckd_cli.commands.cost import count_macs, count_params, measure_latency
    from icckd_cli.models import create_model

    dev = torch.device("cpu")
    print(
        f"| arch | params | MACs ({size}x{size}) | latency ms (batch 1) "
        f"| images/s (batch {batch}) |"
    )
    print("|---|---|---|---|---|")
    for arch in archs:
        model = create_model(arch, classes).to(memory_format=torch.channels_last)
        t = measure_latency(model, size, dev, batch, channels_last=True)
        print(f"| {arch} | {count_params(model):,} | {si(count_macs(model, size))} | "
              f"{t['latency_ms']:.2f} | {t['throughput']:,.0f} |")  # fmt: skip
    print(f"\n(timing: {t['timing']})")


def quickstart_added() -> None:
    from icckd_cli.base.checkpoint import save_model
    from icckd_cli.commands.experiment.costs import cost_figure, measure_costs
    from icckd_cli.commands.experiment.quickstart import quickstart_experiment
    from icckd_cli.commands.experiment.results import collect
    from icckd_cli.data import load_dataset
    from icckd_cli.models import create_model

    with tempfile.TemporaryDirectory() as tmp:
        exp = quickstart_experiment({"out": Path(tmp) / "qs", "device": "cpu"})
        spec = load_dataset("digits").spec.to_dict()
        for run in exp.runs:  # every run "finished": untrained resnet8 checkpoints
            meta = {"kind": run.kind, "arch": run.config.arch, "num_classes": 10,
                    "dataset": spec, "config": {}, "metrics": {"final": {"top1": 90.0},
                    "best": {"top1": 91.0}}}  # fmt: skip
            save_model(run.out / "model.safetensors", create_model(run.config.arch, 10), meta)
        # the first pass imports what a real quickstart has imported already (matplotlib for
        # the learning curves, torch._dynamo for training): the later passes are the cost
        for latency in (False, True, False):
            exp.options.latency = latency
            t0 = time.perf_counter()
            costs = measure_costs(exp, lambda e, i: None)
            results = collect(exp, {}, costs)
            results["cost"]["figure"] = cost_figure(exp, results)
            took = time.perf_counter() - t0
            ms = costs["archs"]["resnet8"]["latency_ms"]
            print(f"quickstart cost table, latency {latency}: {took:.2f} s (resnet8 batch 1: "
                  f"{'-' if ms is None else f'{ms:.2f} ms'})")  # fmt: skip


def export_times() -> None:
    import warnings

    from icckd_cli.models import create_model

    warnings.simplefilter("ignore")
    for arch in ("resnet8", "tv_mobilenet_v2"):
        model = create_model(arch, 10).eval()
        x = torch.rand(2, 3, 32, 32)
        with tempfile.TemporaryDirectory() as tmp:
            for dynamo in (False, True, False):  # the first, untimed in effect, warms up
                t0 = time.perf_counter()
                kw = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},)} if dynamo else {
                    "dynamic_axes": {"images": {0: "batch"}}}  # fmt: skip
                torch.onnx.export(model, (x,), f"{tmp}/m.onnx", dynamo=dynamo, verbose=False,
                                  input_names=["images"], opset_version=18, **kw)  # fmt: skip
                print(f"onnx export of {arch}, dynamo={dynamo}: {time.perf_counter() - t0:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=DEFAULT_ARCHS)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--no-quickstart", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"# {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    cost_rows(a.archs.split(","), a.image_size, a.classes, a.batch_size)
    if not a.no_quickstart:
        quickstart_added()
    if not a.no_export:
        export_times()


if __name__ == "__main__":
    main()
