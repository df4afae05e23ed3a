"""The work behind each command: build data, model and objective, run the engine, save.

Every command goes through here, so train-teacher, distill, eval and inspect-softlabels
share one data path, one training loop and one checkpoint format.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icckd_cli import distributed as dist
from icckd_cli.checkpoint import (
    load_any_model,
    load_state_strict,
    load_tensors,
    read_metadata,
    save_model,
    save_tensors,
    weights_hash,
    write_text_atomic,
)
from icckd_cli.config import DistillConfig, TrainTeacherConfig
from icckd_cli.data import Dataset, DataSpec, DeviceLoader, load_dataset
from icckd_cli.engine import Callback, Trainer, TrainState, evaluate, resolve_device
from icckd_cli.errors import IcckdError, UsageError
from icckd_cli.models import create_model
from icckd_cli.objectives import DistillObjective, Objective, TeacherObjective

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"


@dataclass
class RunResult:
    """What a finished training run reports back to the CLI."""

    out: Path
    checkpoint: Path
    final: dict[str, Any]
    best: dict[str, Any]
    history: list[dict[str, Any]]
    params: int
    elapsed: float


# ----------------------------------------------------------------------------- helpers


def prepare_out_dir(out: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber a finished run; make sure the folder can be written."""
    if (out / MODEL_FILE).exists() and not overwrite and not resume:
        raise UsageError(
            f"{out} already holds a finished run ({MODEL_FILE}); pass --overwrite to replace "
            "it or choose another --out"
        )
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise IcckdError(
            f"cannot write to output folder {out} ({exc.strerror}); choose a writable --out"
        ) from None


def load_data(cfg: Any, device: torch.device) -> Dataset:
    """The configured data set with both splits moved to the device."""
    data = load_dataset(
        cfg.dataset,
        cfg.data_dir,
        download=cfg.download,
        flip=cfg.flip,
        train_per_class=cfg.train_per_class,
        test_per_class=cfg.test_per_class,
    )
    data.train, data.test = data.train.to(device), data.test.to(device)
    return data


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def resolved_config(cfg: Any) -> dict[str, Any]:
    """The config as JSON-ready values, with the recipe's derived values filled in."""
    out = cfg.model_dump(mode="json")
    out["lr"] = cfg.resolved_lr(cfg.arch)
    out["lr_decay_epochs"] = cfg.resolved_decay()
    return out


@contextmanager
def stop_on_signals() -> Iterator[list[bool]]:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step."""
    flag = [False]

    def handler(signum: int, frame: Any) -> None:
        flag[0] = True

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield flag
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def check_classes(spec: DataSpec, num_classes: int, meta: dict[str, Any], source: str) -> None:
    """A checkpoint and a data set must agree on the classes and the input size."""
    if num_classes != spec.num_classes:
        raise UsageError(
            f"{source} predicts {num_classes} classes but data set '{spec.name}' has "
            f"{spec.num_classes}; use the data set it was trained on"
        )
    theirs = (meta.get("dataset") or {}).get("classes")
    if theirs and list(theirs) != list(spec.classes):
        raise UsageError(
            f"{source} was trained on other classes ({', '.join(theirs[:4])}...) than data set "
            f"'{spec.name}' ({', '.join(spec.classes[:4])}...); use the matching data set"
        )
    size = (meta.get("dataset") or {}).get("image_size")
    if size and size != spec.image_size:
        raise UsageError(
            f"{source} was trained on {size}x{size} images but '{spec.name}' has "
            f"{spec.image_size}x{spec.image_size}; use the matching data set"
        )


# ----------------------------------------------------------------------------- training


def _state_tensors(model: nn.Module, objective: Objective, opt: torch.optim.Optimizer) -> dict:
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"objective/{k}": v for k, v in objective.state_dict().items()})
    for i, s in opt.state_dict()["state"].items():
        for name, v in s.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{i}/{name}"] = v
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    return tensors


def _restore_state(
    path: Path, model: nn.Module, objective: Objective, opt: torch.optim.Optimizer
) -> TrainState:
    meta = read_metadata(path)
    t = load_tensors(path)
    sub = {k[6:]: v for k, v in t.items() if k.startswith("model/")}
    load_state_strict(model, sub, str(path))
    objective.load_state_dict({k[10:]: v for k, v in t.items() if k.startswith("objective/")})
    osd = opt.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for k, v in t.items():
        if k.startswith("optim/"):
            _, i, name = k.split("/")
            state.setdefault(int(i), {})[name] = v
    osd["state"] = state
    opt.load_state_dict(osd)
    torch.set_rng_state(t["rng/torch"])
    if "rng/cuda" in t and torch.cuda.is_available():
        torch.cuda.set_rng_state(t["rng/cuda"])
    return TrainState(**meta["extra"])


def _fit(
    cfg: Any,
    kind: str,
    data: Dataset,
    model: nn.Module,
    objective: Objective,
    device: torch.device,
    callback: Callback,
    resume: bool,
    extra_meta: dict[str, Any],
) -> RunResult:
    """The shared part of train-teacher and distill."""
    out = Path(cfg.out)
    config = resolved_config(cfg)
    if dist.is_main():
        write_text_atomic(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    model = model.to(device)
    objective = objective.to(device)
    if cfg.channels_last and device.type != "mps":
        model = model.to(memory_format=torch.channels_last)
    train_model: nn.Module = model
    if dist.is_distributed():
        if cfg.sync_bn:
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=ids)
    params = [p for p in [*model.parameters(), *objective.parameters()] if p.requires_grad]
    opt = torch.optim.SGD(
        params, lr=config["lr"], momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    state = TrainState()
    if resume:
        state = _restore_state(out / STATE_FILE, model, objective, opt)
    loader = DeviceLoader(
        data.train,
        data.spec,
        cfg.batch_size,
        views=objective.views,
        seed=cfg.seed,
        padding=cfg.crop_padding,
        channels_last=cfg.channels_last,
        rank=dist.rank(),
        world=dist.world_size(),
    )
    if len(loader) == 0:
        raise UsageError(
            f"--batch-size {cfg.batch_size} leaves no batch of 2 or more images from "
            f"{len(data.train)} training images; lower --batch-size"
        )
    step_fn = torch.compile(train_model) if cfg.compile else train_model

    def save_state(st: TrainState) -> None:
        if dist.is_main():
            meta = {
                "kind": "state",
                "arch": cfg.arch,
                "num_classes": data.spec.num_classes,
                "config": config,
                "extra": st.__dict__,
            }
            save_tensors(out / STATE_FILE, _state_tensors(model, objective, opt), meta)

    def on_event(event: str, info: dict[str, Any]) -> None:
        if event == "epoch" and dist.is_main():
            lines = "".join(json.dumps(r) + "\n" for r in trainer.state.history)
            write_text_atomic(out / METRICS_FILE, lines)
        if dist.is_main():
            callback(event, info)

    with stop_on_signals() as flag:
        trainer = Trainer(
            model=step_fn,
            objective=objective,
            optimizer=opt,
            loader=loader,
            test=data.test,
            spec=data.spec,
            epochs=cfg.epochs,
            base_lr=config["lr"],
            decay_epochs=config["lr_decay_epochs"],
            decay_rate=cfg.lr_decay_rate,
            precision=cfg.precision,
            channels_last=cfg.channels_last,
            eval_batch_size=cfg.eval_batch_size,
            callback=on_event,
            save_state=save_state,
            save_every=cfg.save_every,
            stop_requested=lambda: flag[0],
            state=state,
            eval_model=model,
        )
        st = trainer.run()
    final = {k: st.history[-1][k] for k in ("top1", "top5", "nll", "ece")}
    checkpoint = out / MODEL_FILE
    if dist.is_main():
        meta = {
            "kind": kind,
            "arch": cfg.arch,
            "num_classes": data.spec.num_classes,
            "dataset": data.spec.to_dict(),
            "config": config,
            "seed": cfg.seed,
            "metrics": {"final": final, "best": st.best, "epochs": cfg.epochs},
            "objective": objective.describe(),
            **extra_meta,
        }
        save_model(checkpoint, model, meta)
        (out / STATE_FILE).unlink(missing_ok=True)
    return RunResult(out, checkpoint, final, st.best, st.history, count_params(model), st.elapsed)


def _setup(cfg: Any, resume: bool) -> tuple[torch.device, Dataset]:
    out = Path(cfg.out)
    if resume:
        if (out / MODEL_FILE).exists():
            raise UsageError(f"{out} holds a finished run; there is nothing to resume")
        if not (out / STATE_FILE).exists():
            raise UsageError(
                f"{out} holds no {STATE_FILE} to resume from; start the run without --resume"
            )
    if dist.is_main():
        prepare_out_dir(out, cfg.overwrite, resume)
    device = dist.local_device(resolve_device(cfg.device))
    torch.manual_seed(cfg.seed)
    data = load_data(cfg, device)
    return device, data


def train_teacher(cfg: TrainTeacherConfig, callback: Callback, resume: bool = False) -> RunResult:
    """Train a teacher: cross-entropy, or CE + the intra-class contrastive term."""
    device, data = _setup(cfg, resume)
    model = create_model(cfg.arch, data.spec.num_classes)
    if cfg.init is not None:
        source, meta = load_any_model(cfg.init, arch=cfg.arch)
        check_classes(data.spec, source.num_classes, meta, str(cfg.init))
        model.load_state_dict(source.state_dict())
    objective = TeacherObjective(
        data.spec.num_classes,
        model.feature_dim,
        icc_weight=cfg.icc_weight,
        margin=cfg.margin,
        temperature=cfg.icc_temperature,
        queue_size=cfg.queue_size,
        embedding=cfg.embedding,
        projection_dim=cfg.projection_dim,
    )
    extra = {"init": str(cfg.init)} if cfg.init else {}
    return _fit(cfg, "teacher", data, model, objective, device, callback, resume, extra)


def load_teacher(cfg: DistillConfig, spec: DataSpec) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher and what the student records of it."""
    if cfg.teacher is None:
        raise UsageError("distill needs a teacher: pass --teacher T.safetensors (or T.pth)")
    teacher, meta = load_any_model(cfg.teacher, arch=cfg.teacher_arch)
    check_classes(spec, teacher.num_classes, meta, str(cfg.teacher))
    info = {
        "path": str(Path(cfg.teacher).resolve()),
        "sha256": weights_hash(teacher.state_dict()),
        "arch": teacher.arch,
        "kind": meta.get("kind", "pth"),
        "objective": meta.get("objective"),
        "metrics": meta.get("metrics"),
    }
    return teacher, info


def distill(cfg: DistillConfig, callback: Callback, resume: bool = False) -> RunResult:
    """Train a student from a frozen teacher with the configured terms."""
    if cfg.teacher is None:
        raise UsageError("distill needs a teacher: pass --teacher T.safetensors (or T.pth)")
    device, data = _setup(cfg, resume)
    teacher, info = load_teacher(cfg, data.spec)
    teacher = teacher.to(device)
    if cfg.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    model = create_model(cfg.arch, data.spec.num_classes)
    weights = cfg.resolved_weights()
    crd = None
    if weights["crd_weight"]:
        from icckd_cli.crd import CRDLoss

        crd = CRDLoss(
            model.feature_dim,
            teacher.feature_dim,
            len(data.train),
            feat_dim=cfg.crd_feat_dim,
            nce_k=cfg.crd_nce_k,
            nce_t=cfg.crd_temperature,
            momentum=cfg.crd_momentum,
        )
    objective = DistillObjective(
        teacher,
        weights,
        kd_temperature=cfg.kd_temperature,
        rkd_distance_weight=cfg.rkd_distance_weight,
        rkd_angle_weight=cfg.rkd_angle_weight,
        dkd_alpha=cfg.dkd_alpha,
        dkd_beta=cfg.dkd_beta,
        dkd_temperature=cfg.dkd_temperature,
        dkd_warmup=cfg.resolved_dkd_warmup(),
        crd=crd,
    )
    return _fit(cfg, "student", data, model, objective, device, callback, resume, {"teacher": info})


# ----------------------------------------------------------------------------- evaluation


def open_checkpoint(
    path: Path,
    dataset: str | None,
    data_dir: Path | None,
    download: bool,
    device_name: str,
    test_per_class: int | None = None,
    train_per_class: int | None = None,
) -> tuple[nn.Module, dict[str, Any], Dataset, torch.device]:
    """A checkpoint's model and the data set recorded in it (or the one given)."""
    device = resolve_device(device_name)
    model, meta = load_any_model(path, device=device)
    recorded = meta.get("dataset") or {}
    name = dataset or recorded.get("name")
    if name is None:
        raise UsageError(f"{path} records no data set; pass --dataset (and --data-dir)")
    if data_dir is None and dataset in (None, recorded.get("name")) and recorded.get("data_dir"):
        data_dir = Path(recorded["data_dir"])
    cfg_rec = meta.get("config") or {}
    if dataset is None:  # the recorded subset, so eval sees what training saw
        test_per_class = test_per_class or cfg_rec.get("test_per_class")
        train_per_class = train_per_class or cfg_rec.get("train_per_class")
    data = load_dataset(
        name,
        data_dir,
        download=download,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
    )
    check_classes(data.spec, model.num_classes, meta, str(path))
    if recorded.get("mean"):  # normalise exactly as in training
        data.spec.mean, data.spec.std = recorded["mean"], recorded["std"]
    data.train, data.test = data.train.to(device), data.test.to(device)
    return model, meta, data, device


def evaluate_checkpoint(
    path: Path,
    dataset: str | None = None,
    data_dir: Path | None = None,
    download: bool = True,
    split: str = "test",
    device: str = "auto",
    batch_size: int = 512,
) -> dict[str, Any]:
    """Metrics of a checkpoint on a split: top1, top5, nll, ece, params and what it is."""
    model, meta, data, dev = open_checkpoint(path, dataset, data_dir, download, device)
    metrics = evaluate(model, getattr(data, split), data.spec, batch_size)
    return {
        "checkpoint": str(path),
        "arch": model.arch,
        "kind": meta.get("kind", "pth"),
        "dataset": data.spec.name,
        "split": split,
        **metrics,
        "params": count_params(model),
    }
