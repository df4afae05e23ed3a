"""The work behind each command: build data, model and objective, run the engine, save.

train-teacher, distill and experiment go through here, so they share one data path, one
training loop and one checkpoint format. The run folder lives in rundir.py, the resumable
state in state.py, opening and evaluating checkpoints in evaluation.py, a run's data and
resolved config in inputs.py, its teacher (run, or read from its store) in teachers.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icckd_cli.base.checkpoint import save_model
from icckd_cli.base.errors import DataFileError, UsageError
from icckd_cli.commands.evaluation import check_classes, check_input_size, count_params
from icckd_cli.commands.experiment.matched.snapshots import snapshot_keeper
from icckd_cli.commands.inputs import load_data, record, resolve_run, train_loader, validation_info
from icckd_cli.commands.predictions import save_test_predictions
from icckd_cli.commands.teachers import load_teacher, teacher_source
from icckd_cli.data import Dataset
from icckd_cli.data.imbalance import dataset_meta
from icckd_cli.models import ZooModel, create_model, model_args_for, resolve_name
from icckd_cli.models.loading import load_any_model, load_state_strict
from icckd_cli.models.registry import probe_model
from icckd_cli.settings.config import DistillConfig, RunConfig, TrainTeacherConfig
from icckd_cli.settings.recipes import make_optimizer, summary
from icckd_cli.training import distributed as dist
from icckd_cli.training.engine import (
    Callback,
    Diverged,
    Trainer,
    TrainState,
    channels_last_on,
    resolve_device,
    tune_backends,
)
from icckd_cli.training.objectives import (
    DistillObjective,
    Objective,
    TeacherObjective,
)
from icckd_cli.training.rundir import (
    MODEL_FILE,
    STATE_FILE,
    check_resumable,
    kept_state,
    prepare_out_dir,
    resume_hint,
    start_run_dir,
    stop_on_signals,
    write_metrics,
    writing,
)
from icckd_cli.training.state import restore_state, save_state
from icckd_cli.training.tensorboard_log import check_tensorboard, open_event_log


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
    validation: dict[str, Any] | None = None  # the held-out split best was chosen on


# ----------------------------------------------------------------------------- training


def _fit(
    cfg: RunConfig,
    kind: str,
    data: Dataset,
    model: nn.Module,
    objective: Objective,
    device: torch.device,
    callback: Callback,
    resume: bool,
    extra_meta: dict[str, Any],
) -> RunResult:
    """The shared part of train-teacher and distill: `cfg` resolved once into the run's
    settings (`run`), which the rest reads and config.json records."""
    lr_given = cfg.lr is not None  # before resolving: the recipe line shows the lr rule
    # the builder's defaults filled in, so the record rebuilds the same model
    run = resolve_run(cfg).model_copy(update={"model_args": dict(getattr(model, "model_args", {}))})
    config = record(run)
    out, lr = Path(run.out), run.resolved_lr(run.arch)  # resolved: the lr itself
    if dist.is_main():
        callback("recipe", summary(config, dist.world_size(), lr_given=lr_given))
        from icckd_cli.commands.evaluation import patch_grid_warning

        if (few := patch_grid_warning(model, data.spec.image_size)) is not None:
            callback("warning", {"message": few})
        start_run_dir(out, config, run.overwrite, resume)
    tune_backends(device)
    model = model.to(device)
    objective = objective.to(device)
    # one answer for the model, the batches and evaluation (never channels-last on MPS)
    channels_last = channels_last_on(device, run.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model: nn.Module = model
    if dist.is_distributed():
        if run.sync_bn and device.type != "cuda":
            raise UsageError(
                "--sync-bn needs GPUs (SyncBatchNorm runs on CUDA only); drop --sync-bn on CPU"
            )
        if run.sync_bn:
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=ids)
        # DDP keeps the model in step; the objective's own heads (projection, CRD) need the same
        dist.broadcast_from_main(objective.parameters())
    opt = make_optimizer([model, objective], run.optimizer, lr, run.weight_decay, run.momentum)
    if dist.is_distributed():
        heads = list(objective.parameters())
        opt.register_step_pre_hook(lambda *_: dist.average_gradients(heads))
    state = TrainState()
    state = restore_state(out, model, objective, opt, extra_meta) if resume else state
    loader = train_loader(run, data, objective.views, channels_last)
    step_fn: nn.Module = torch.compile(train_model) if run.compile else train_model  # type: ignore[assignment]

    header = {"arch": run.arch, "num_classes": data.spec.num_classes, "config": config,
              "model_args": config["model_args"]}  # fmt: skip

    keeper = None  # a matched experiment's teacher keeps each evaluated epoch
    if dist.is_main() and isinstance(run, TrainTeacherConfig) and run.keep_snapshots:
        snap_meta = {"kind": kind, **header, "seed": run.seed,
                     "dataset": dataset_meta(data, run.imbalance_factor),
                     "objective": objective.describe(), **extra_meta}  # fmt: skip
        keeper = snapshot_keeper(run, out, model, snap_meta, state.epoch if resume else 0)

    def on_save(st: TrainState) -> None:
        if dist.is_main():
            save_state(out, st, model, objective, opt, header, extra_meta)

    def on_event(event: str, info: dict[str, Any]) -> None:
        if event == "epoch" and dist.is_main():
            write_metrics(out, trainer.state.history)
            if keeper is not None:
                keeper.epoch(info)
            if events is not None:
                events.epoch(info)
        if dist.is_main():
            callback(event, info)

    with stop_on_signals() as flag:
        # Trainer and save_model are this module's names, read at each run: tests swap them
        trainer = Trainer(
            model=step_fn,
            objective=objective,
            optimizer=opt,
            loader=loader,
            test=data.test,
            val=data.val,
            spec=data.spec,
            # a method's preliminary stage comes first, at the first learning rate
            epochs=run.epochs + objective.preliminary_epochs,
            base_lr=lr,
            decay_epochs=[e + objective.preliminary_epochs for e in run.resolved_decay()],
            decay_rate=run.lr_decay_rate,
            schedule=run.schedule,
            warmup_epochs=run.resolved_warmup(run.arch),
            precision=run.precision,
            channels_last=channels_last,
            eval_batch_size=run.eval_batch_size,
            callback=on_event,
            save_state=on_save,
            save_every=run.save_every,
            eval_every=run.eval_every,
            stop_requested=lambda: dist.any_rank(flag[0]),  # all ranks stop together
            state=state,
            eval_model=model,
        )
        # process 0 alone writes, as for metrics.jsonl; a resumed run continues its curves
        events = open_event_log(run.tensorboard, out, state.history) if dist.is_main() else None
        try:
            st = trainer.run()
        except Diverged as exc:
            raise Diverged(exc.message + kept_state(out), exc.part, exc.epoch, exc.step) from None
        except DataFileError as exc:
            raise DataFileError(exc.message + resume_hint(out, kind)) from None
        finally:
            if events is not None:
                events.close()
    final = {k: v for k, v in st.history[-1].items() if k in FINAL_KEYS}
    checkpoint = out / MODEL_FILE
    metrics: dict[str, Any] = {"final": final, "best": st.best, "epochs": run.epochs}
    if data.val is not None:  # what "best" was chosen on
        metrics["validation"] = validation_info(run, data)
    if dist.is_main():
        meta = {
            "kind": kind,
            "arch": run.arch,
            "num_classes": data.spec.num_classes,
            "model_args": config["model_args"],
            "dataset": dataset_meta(data, run.imbalance_factor),  # train_counts if long-tailed
            "config": config,
            "seed": run.seed,
            "metrics": metrics,
            "objective": objective.describe(),
            **extra_meta,
        }
        # the last epoch's test pass, reused; then the model: its file says "done"
        save_test_predictions(out, model, data, run, channels_last, trainer.test_predictions)
        with writing(out, MODEL_FILE):
            save_model(checkpoint, model, meta)
        (out / STATE_FILE).unlink(missing_ok=True)
    dist.barrier()  # under torchrun: return once the checkpoint exists (a student may load it next)
    n_params = count_params(model)
    valid = metrics.get("validation")
    return RunResult(out, checkpoint, final, st.best, st.history, n_params, st.elapsed, valid)


FINAL_KEYS = ("top1", "top5", "nll", "ece", "val_top1", "val_top5", "val_nll", "val_ece")


def _precheck(cfg: RunConfig, resume: bool) -> torch.device:
    """The cheap checks, before data is loaded and before anything is written."""
    resolve_name(cfg.arch)  # an unknown architecture fails now, not after the data loads
    if ":" in cfg.arch or cfg.model_args:  # so do builder arguments the builder rejects
        probe_model(cfg.arch, 2, **model_args_for(cfg.arch, cfg.model_args, None))
    check_tensorboard(cfg.tensorboard)
    out = Path(cfg.out)
    if resume:
        check_resumable(out)
    if dist.is_main():
        prepare_out_dir(out, cfg.overwrite, resume)
    return dist.local_device(resolve_device(cfg.device))


@dist.fail_together
def train_teacher(
    cfg: TrainTeacherConfig, callback: Callback, resume: bool = False, test: bool = True
) -> RunResult:
    """Train a teacher: cross-entropy, or CE + the intra-class contrastive term.

    test=False: the test split is never evaluated (load_data); the validation split is.
    """
    device = _precheck(cfg, resume)
    given = dict(cfg.model_args)
    if cfg.init is not None:
        source, meta = load_any_model(cfg.init, cfg.arch, option="--arch", model_args=given)
        given = {**source.model_args, **given}  # fine-tune the model the weights belong to
    data = load_data(cfg, device, callback, test)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, given, data, "--model-arg")
    if cfg.init is not None:
        check_classes(data.spec, source.num_classes, meta, str(cfg.init))
        load_state_strict(model, source.state_dict(), str(cfg.init))
    objective = TeacherObjective.from_config(cfg, data.spec.num_classes, model.feature_dim)
    extra = {"init": str(cfg.init)} if cfg.init else {}
    return _fit(cfg, "teacher", data, model, objective, device, callback, resume, extra)


def build_model(arch: str, given: dict[str, Any], data: Dataset, option: str) -> ZooModel:
    """`arch` for this data set: its classes, the given builder arguments over the defaults."""
    args = model_args_for(arch, given, data.spec.image_size)
    model = create_model(arch, data.spec.num_classes, **args)
    check_input_size(model, data.spec, option)
    return model


@dist.fail_together
def distill(
    cfg: DistillConfig, callback: Callback, resume: bool = False, test: bool = True
) -> RunResult:
    """Train a student from a frozen teacher with the configured terms (test: train_teacher's)."""
    if cfg.teacher is None:
        raise UsageError("distill needs a teacher: pass --teacher T.safetensors (or T.pth)")
    device = _precheck(cfg, resume)
    teacher, meta, info = load_teacher(cfg)  # a bad teacher file fails before the data loads
    data = load_data(cfg, device, callback, test)
    check_classes(data.spec, teacher.num_classes, meta, str(cfg.teacher))
    check_input_size(teacher, data.spec, "--teacher-model-arg", str(cfg.teacher))
    recorded = meta.get("dataset") or {}
    if recorded.get("name") == data.spec.name and recorded.get("mean"):
        # the teacher sees inputs normalised as in its training, also where the student's
        # subset has other pixel statistics (digits and imagefolder derive them from it)
        data.spec.mean, data.spec.std = list(recorded["mean"]), list(recorded["std"])
    source = teacher_source(cfg, teacher, info, data, device, callback)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, cfg.model_args, data, "--model-arg")
    objective = DistillObjective.from_config(
        cfg, source, model.feature_dim, len(data.train), cfg.epochs, model, data.spec.image_size
    )
    return _fit(cfg, "student", data, model, objective, device, callback, resume, {"teacher": info})
