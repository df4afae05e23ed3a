"""What a study found: its trials as rows, the best trial, its test top-1, the importances."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from icckd_cli.base.errors import IcckdError, first_line
from icckd_cli.commands.tune.config import TuneFile
from icckd_cli.commands.tune.storage import Storage, optuna_module
from icckd_cli.commands.tune.study import REASON, RUN_DIR, UNCOUNTED, lost_trials

TEST_TOP1 = "icckd_test_top1"  # study user attribute: {"trial": n, "value": top-1 or None}
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
          "WAITING": "waiting"}  # fmt: skip


def shown_trials(study: Any) -> list[Any]:
    """The study's trials without those that stepped aside unrun (surplus)."""
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if not (t.user_attrs.get(UNCOUNTED) and t.user_attrs.get(REASON, "").startswith("surplus"))
    ]


def trial_row(t: Any) -> dict[str, Any]:
    """A trial as JSON: number, state, value, params, duration_s, run_dir."""
    duration = t.duration.total_seconds() if t.duration is not None else None
    return {
        "number": t.number,
        "state": STATES.get(t.state.name, t.state.name.lower()),
        "value": t.value if t.state.name == "COMPLETE" else None,
        "params": dict(t.params),
        "duration_s": duration,
        "run_dir": t.user_attrs.get(RUN_DIR),
    }


def reasons(study: Any) -> dict[int, str]:
    """Why each failed or pruned trial ended so, by trial number."""
    found = {t.number: t.user_attrs[REASON] for t in shown_trials(study) if REASON in t.user_attrs}
    return {**found, **lost_trials(study)}


def importances(study: Any) -> dict[str, float]:
    """optuna's parameter importances (fANOVA, seeded); {} below 2 complete trials."""
    optuna = optuna_module()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 2:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. one value for a parameter
        return {}
    return {k: float(v) for k, v in found.items()}


def best_trial(study: Any) -> Any | None:
    """The complete trial of highest value (the earlier one on a tie), or None."""
    optuna = optuna_module()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return None
    return max(done, key=lambda t: (t.value, -t.number))


def model_of(tune: TuneFile, trial: Any) -> Path | None:
    """The target model of a trial's folder, where that folder is on this machine."""
    run_dir = trial.user_attrs.get(RUN_DIR)
    if run_dir is None:
        return None
    path = Path(run_dir) / tune.options.target / "model.safetensors"
    return path if path.is_file() else None


def best_test_top1(study: Any, tune: TuneFile, best: Any) -> float | None:
    """The best trial's test top-1, evaluated once and kept with the study.

    The search never reads the test split; this is the one place it is read, after the
    last trial, for the trial chosen on validation. None where its folder is elsewhere.
    """
    kept = study.user_attrs.get(TEST_TOP1) or {}
    if kept.get("trial") == best.number and kept.get("value") is not None:
        return float(kept["value"])
    path = model_of(tune, best)
    if path is None:
        return None
    from icckd_cli.commands.evaluation import evaluate_checkpoint

    try:
        metrics = evaluate_checkpoint(path, split="test", device=tune.options.device)
    except IcckdError as exc:
        raise IcckdError(
            f"evaluating the best trial on the test split: {first_line(exc)}"
        ) from None
    value = float(metrics["top1"])
    study.set_user_attr(TEST_TOP1, {"trial": best.number, "value": value})
    return value


def summary(study: Any, tune: TuneFile, storage: Storage) -> dict[str, Any]:
    """The study as JSON: {study_name, storage, target, direction, best, trials, importances}."""
    best = best_trial(study)
    rows = [trial_row(t) for t in shown_trials(study)]
    # best first, then by value; unfinished trials last, in order
    rows.sort(key=lambda r: (r["value"] is None, -(r["value"] or 0.0), r["number"]))
    best_out = None
    if best is not None:
        best_out = {
            "number": best.number,
            "value": best.value,
            "params": dict(best.params),
            "test_top1": best_test_top1(study, tune, best),
        }
    return {
        "study_name": study.study_name,
        "storage": storage.shown,
        "target": tune.options.target,
        "direction": "maximize",
        "best": best_out,
        "trials": rows,
        "importances": importances(study),
    }
