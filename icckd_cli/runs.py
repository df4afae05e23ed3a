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
from icckd_cli.config import DistillConfig, RunOptions, TrainTeacherConfig
from icckd_cli.data import Dataset, DataSpec, DeviceLoader, load_dataset
from icckd_cli.engine import (
    Callback,
    Diverged,
    Trainer,
    TrainState,
    channels_last_on,
    evaluate,
    resolve_device,
    tune_backends,
)
from icckd_cli.errors import IcckdError, UsageError
from icckd_cli.models import ZooModel, create_model, resolve_name
from icckd_cli.objectives import DistillObjective, Objective, TeacherObjective

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
CHANNELS_LAST = RunOptions.model_fields["channels_last"].default  # a run's default layout


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
    """Refuse to clobber a finished or interrupted run; check the folder can be written.

    Nothing is created here, so a run stopped by a later check leaves no trace.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; choose another --out")
    if not overwrite and not resume:
        if (out / MODEL_FILE).exists():
            raise UsageError(
                f"{out} already holds a finished run ({MODEL_FILE}); pass --overwrite to "
                "replace it or choose another --out"
            )
        if (out / STATE_FILE).exists():
            raise UsageError(
                f"{out} holds an interrupted run ({STATE_FILE}); continue it with --resume "
                f"{out}, or pass --overwrite to start afresh"
            )
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(
            f"cannot create --out {out}: {parent} is a file, not a folder; choose another --out"
        )
    if out.is_dir():
        try:  # root ignores permission bits, so only a real write tells
            probe = out / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise IcckdError(
                f"cannot write to output folder {out} ({exc.strerror}); choose a writable --out"
            ) from None
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise IcckdError(
            f"cannot create output folder {out}: {parent} is not writable; choose a writable --out"
        )


def start_run_dir(out: Path, config: dict[str, Any], overwrite: bool, resume: bool) -> None:
    """Create the run folder and write config.json; --overwrite first clears the old run."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite and not resume:
            # only now, after every check passed: a typo must not cost the old run
            for name in (MODEL_FILE, STATE_FILE, METRICS_FILE):
                (out / name).unlink(missing_ok=True)
        write_text_atomic(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    except OSError as exc:
        raise IcckdError(
            f"cannot write to output folder {out} ({exc.strerror or exc}); choose a writable --out"
        ) from None


@contextmanager
def writing(out: Path, what: str) -> Iterator[None]:
    """A failed write (disk full, permissions) as one line that says what is kept."""
    try:
        yield
    except OSError as exc:
        kept = (
            f"; the last good state stays in {out / STATE_FILE}: continue with --resume {out}"
            if (out / STATE_FILE).exists()
            else ""
        )
        raise IcckdError(
            f"cannot write {out / what} ({exc.strerror or exc}); free space or fix the "
            f"folder's permissions{kept}"
        ) from None


def kept_state(out: Path) -> str:
    """What a run that stopped on NaN leaves behind, for its error message."""
    path = out / STATE_FILE
    try:
        extra = read_metadata(path).get("extra") or {}
    except IcckdError:
        return "; nothing was saved from this run (no resumable state had been written yet)"
    epoch, step = extra.get("epoch", 0), extra.get("step", 0)
    where = f"epoch {epoch + 1}, step {step}" if step else f"end of epoch {epoch}"
    return f"; nothing was saved after it: the last good state ({where}) stays in {path}"


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
    out["arch"] = resolve_name(cfg.arch)  # the registered spelling: the recipe's lr keys on it
    out["lr"] = cfg.resolved_lr(out["arch"])
    out["lr_decay_epochs"] = cfg.resolved_decay()
    for key in ("data_dir", "teacher", "init"):  # so --resume works from any folder
        if out.get(key) is not None:
            out[key] = str(Path(out[key]).resolve())
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
    path: Path,
    model: nn.Module,
    objective: Objective,
    opt: torch.optim.Optimizer,
    extra_meta: dict[str, Any],
) -> TrainState:
    """Load an interrupted run's state into the freshly built modules; returns where it was."""
    meta = read_metadata(path)
    then = (meta.get("teacher") or {}).get("sha256")
    now = (extra_meta.get("teacher") or {}).get("sha256")
    if then and now and then != now:
        raise UsageError(
            f"the teacher {extra_meta['teacher']['path']} changed since this run was "
            "interrupted; put the original back, or start afresh with --overwrite"
        )
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
        start_run_dir(out, config, cfg.overwrite, resume)
    tune_backends(device)
    model = model.to(device)
    objective = objective.to(device)
    if channels_last_on(device, cfg.channels_last):
        model = model.to(memory_format=torch.channels_last)
    train_model: nn.Module = model
    if dist.is_distributed():
        if cfg.sync_bn and device.type != "cuda":
            raise UsageError(
                "--sync-bn needs GPUs (SyncBatchNorm runs on CUDA only); drop --sync-bn on CPU"
            )
        if cfg.sync_bn:
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=ids)
        # DDP keeps the model in step; the objective's own heads (projection, CRD) need the same
        dist.broadcast_from_main(objective.parameters())
    params = [p for p in [*model.parameters(), *objective.parameters()] if p.requires_grad]
    opt = torch.optim.SGD(
        params, lr=config["lr"], momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    if dist.is_distributed():
        heads = list(objective.parameters())
        opt.register_step_pre_hook(lambda *_: dist.average_gradients(heads))
    state = TrainState()
    if resume:
        state = _restore_state(out / STATE_FILE, model, objective, opt, extra_meta)
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
    step_fn: nn.Module = torch.compile(train_model) if cfg.compile else train_model  # type: ignore[assignment]

    def save_state(st: TrainState) -> None:
        if dist.is_main():
            meta = {
                "kind": "state",
                "arch": config["arch"],
                "num_classes": data.spec.num_classes,
                "config": config,
                "extra": st.__dict__,
                **extra_meta,  # the teacher's hash, checked on resume
            }
            with writing(out, STATE_FILE):
                save_tensors(out / STATE_FILE, _state_tensors(model, objective, opt), meta)

    def on_event(event: str, info: dict[str, Any]) -> None:
        if event == "epoch" and dist.is_main():
            lines = "".join(json.dumps(r) + "\n" for r in trainer.state.history)
            with writing(out, METRICS_FILE):
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
            stop_requested=lambda: dist.any_rank(flag[0]),  # all ranks stop together
            state=state,
            eval_model=model,
        )
        try:
            st = trainer.run()
        except Diverged as exc:
            raise Diverged(exc.message + kept_state(out), exc.part, exc.epoch, exc.step) from None
    final = {k: st.history[-1][k] for k in ("top1", "top5", "nll", "ece")}
    checkpoint = out / MODEL_FILE
    if dist.is_main():
        meta = {
            "kind": kind,
            "arch": config["arch"],
            "num_classes": data.spec.num_classes,
            "dataset": data.spec.to_dict(),
            "config": config,
            "seed": cfg.seed,
            "metrics": {"final": final, "best": st.best, "epochs": cfg.epochs},
            "objective": objective.describe(),
            **extra_meta,
        }
        with writing(out, MODEL_FILE):
            save_model(checkpoint, model, meta)
        (out / STATE_FILE).unlink(missing_ok=True)
    dist.barrier()  # under torchrun: return once the checkpoint exists (a student may load it next)
    return RunResult(out, checkpoint, final, st.best, st.history, count_params(model), st.elapsed)


def _precheck(cfg: Any, resume: bool) -> torch.device:
    """The cheap checks, before data is loaded and before anything is written."""
    resolve_name(cfg.arch)  # an unknown architecture fails now, not after the data loads
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
    return dist.local_device(resolve_device(cfg.device))


@dist.fail_together
def train_teacher(cfg: TrainTeacherConfig, callback: Callback, resume: bool = False) -> RunResult:
    """Train a teacher: cross-entropy, or CE + the intra-class contrastive term."""
    device = _precheck(cfg, resume)
    if cfg.init is not None:
        source, meta = load_any_model(cfg.init, arch=cfg.arch, option="--arch")
    data = load_data(cfg, device)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, data.spec.num_classes)
    if cfg.init is not None:
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


def load_teacher(cfg: DistillConfig) -> tuple[ZooModel, dict[str, Any], dict[str, Any]]:
    """The frozen teacher, its metadata, and what the student records of it."""
    if cfg.teacher is None:
        raise UsageError("distill needs a teacher: pass --teacher T.safetensors (or T.pth)")
    teacher, meta = load_any_model(cfg.teacher, arch=cfg.teacher_arch, option="--teacher-arch")
    info = {
        "path": str(Path(cfg.teacher).resolve()),
        "sha256": weights_hash(teacher.state_dict()),
        "arch": teacher.arch,
        "kind": meta.get("kind", "pth"),
        "objective": meta.get("objective"),
        "metrics": meta.get("metrics"),
    }
    return teacher, meta, info


@dist.fail_together
def distill(cfg: DistillConfig, callback: Callback, resume: bool = False) -> RunResult:
    """Train a student from a frozen teacher with the configured terms."""
    if cfg.teacher is None:
        raise UsageError("distill needs a teacher: pass --teacher T.safetensors (or T.pth)")
    device = _precheck(cfg, resume)
    teacher, meta, info = load_teacher(cfg)  # a bad teacher file fails before the data loads
    data = load_data(cfg, device)
    check_classes(data.spec, teacher.num_classes, meta, str(cfg.teacher))
    teacher = teacher.to(device)
    if channels_last_on(device, cfg.channels_last):
        teacher = teacher.to(memory_format=torch.channels_last)
    torch.manual_seed(cfg.seed)
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
) -> tuple[ZooModel, dict[str, Any], Dataset, torch.device]:
    """A checkpoint's model and the data set recorded in it (or the one given)."""
    device = resolve_device(device_name)
    model, meta = load_any_model(path, device=device, option=None)
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
    if checkpoint_channels_last(meta, device):
        model = model.to(memory_format=torch.channels_last)
    assert isinstance(model, ZooModel)
    return model, meta, data, device


def checkpoint_channels_last(meta: dict[str, Any], device: torch.device) -> bool:
    """Evaluate in the layout the run trained in (channels-last unless it was turned off)."""
    # a .pth teacher records no config: the run default, as training would use (see
    # docs/performance.md: channels-last evaluates faster on the CPU)
    recorded = (meta.get("config") or {}).get("channels_last", CHANNELS_LAST)
    return channels_last_on(device, bool(recorded))


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
    cl = checkpoint_channels_last(meta, dev)
    metrics = evaluate(model, getattr(data, split), data.spec, batch_size, channels_last=cl)
    return {
        "checkpoint": str(path),
        "arch": model.arch,
        "kind": meta.get("kind", "pth"),
        "dataset": data.spec.name,
        "split": split,
        **metrics,
        "params": count_params(model),
    }
