"""icckd tune on screen and on paper: a line per trial, the trials table, the importances,
and the figures (optimisation history; validation top-1 against each searched setting)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from rich import box
from rich.markup import escape
from rich.table import Table

from icckd_cli.presentation.console import err, out
from icckd_cli.presentation.run_plots import panel_grid, save_atomic

HISTORY_FIGURE, PARAMS_FIGURE = "optimization-history.png", "parameters.png"


def _short(x: Any) -> str:
    """A table cell: 3 significant digits."""
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _value(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def params_text(params: Mapping[str, Any]) -> str:
    """teacher.margin=0.31 student.kd_temperature=4."""
    return " ".join(f"{k}={_value(v)}" for k, v in params.items())


def trial_line(row: Mapping[str, Any], reason: str | None, seconds: float) -> None:
    """The progress line of one finished trial, on stderr."""
    state = row["state"]
    if state == "complete":
        result = f"val top-1 {row['value']:.2f}"
    else:
        result = state + (f" ({reason})" if reason else "")
    err.print(
        f"trial {row['number']}: {escape(params_text(row['params']))} -> {escape(result)} "
        f"[{seconds:.1f} s]",
        highlight=False,
        soft_wrap=True,
    )


def _header(name: str, names: Sequence[str]) -> str:
    """teacher.margin -> margin where no other role searches a `margin`; else on two lines."""
    role, _, key = name.partition(".")
    if len(key) > 8:  # a narrow column breaks the name after its underscores
        key = key.replace("_", "_\n")
    if sum(n.partition(".")[2] == name.partition(".")[2] for n in names) > 1:
        return f"{role}\n{key}"
    return key


def trials_table(result: Mapping[str, Any], reasons: Mapping[int, str]) -> None:
    """The trials, best first; why trials failed or were pruned; the best trial's test top-1
    (read once, after the search); the importances."""
    names = list(dict.fromkeys(k for r in result["trials"] for k in r["params"]))
    target = result["target"]
    table = Table(
        title=f"study {result['study_name']}: {target} validation top-1 (last epoch), best first",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("trial", justify="right")
    table.add_column("val\ntop-1", justify="right", overflow="fold")  # or how it ended
    for name in names:
        table.add_column(_header(name, names), justify="right", overflow="fold")
    table.add_column("time", justify="right")
    for r in result["trials"]:
        value = r["state"] if r["value"] is None else f"{r['value']:.2f}"
        seconds = "" if r["duration_s"] is None else f"{r['duration_s']:.0f}s"
        cells = [_short(r["params"][n]) if n in r["params"] else "" for n in names]
        table.add_row(str(r["number"]), value, *cells, seconds)
    out.print(table)
    shown = {r["number"]: r["state"] for r in result["trials"]}
    for number, reason in sorted(reasons.items()):
        if shown.get(number) not in (None, "complete"):
            out.print(f"trial {number} {shown[number]}: {escape(reason)}", highlight=False)
    best = result["best"]
    if best is None:
        out.print("no trial completed: no best setting yet", highlight=False)
    else:
        test = best["test_top1"]
        text = (
            "not evaluated here (its folder is on another machine)"
            if test is None
            else (f"{test:.2f}")
        )
        out.print(
            f"best: trial {best['number']}, {target} validation top-1 {best['value']:.2f}; "
            f"test top-1 of that trial, read once after the search: {text}",
            highlight=False,
        )
    importance_table(result["importances"])


def importance_table(importances: Mapping[str, float]) -> None:
    """optuna's parameter importances (fANOVA), largest first."""
    if not importances:
        out.print("parameter importances need 2 or more complete trials", highlight=False)
        return
    table = Table(title="parameter importances (fANOVA)", title_justify="left")
    table.add_column("parameter")
    table.add_column("importance", justify="right")
    for name, value in sorted(importances.items(), key=lambda kv: -kv[1]):
        table.add_row(escape(name), f"{value:.3f}")
    out.print(table)


def written(paths: Sequence[Path]) -> None:
    """The files a study wrote."""
    for path in paths:
        out.print(f"wrote {escape(str(path))}", highlight=False)


def still_running_line(
    number: int,
    worker: str,
    rerun: str,
    silent_s: float | None = None,
    grace_s: float | None = None,
    free_at: datetime | None = None,
) -> None:
    """One line on stderr for a trial another worker (or a dead one) still holds: with a
    heartbeat, when it is freed and the command that then replaces it."""
    if grace_s is None:  # a journal: no heartbeat; a dead worker on this machine is found
        text = (
            f"trial {number} is still running ({worker}); the summary shows it as running: "
            f"rerun once that worker ends: {rerun}"
        )
    else:
        beat = "" if silent_s is None else f", last heartbeat {silent_s:.0f} s ago"
        when = (
            f"after {free_at:%H:%M:%S}"
            if free_at is not None
            else f"{grace_s:g} s after its last heartbeat"
        )
        text = (
            f"trial {number} is still running ({worker}{beat}); if that worker is gone, its "
            f"trial is freed {when} ({grace_s:g} s without a heartbeat): rerun then to run its "
            f"replacement: {rerun}"
        )
    err.print(escape(text), highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------- figures


def _finished(trials: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted((t for t in trials if t["value"] is not None), key=lambda t: t["number"])


def history_figure(result: Mapping[str, Any]) -> Figure:
    """Each complete trial's value in trial order, and the best so far."""
    done = _finished(result["trials"])
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    xs = [t["number"] for t in done]
    ys = [t["value"] for t in done]
    ax.plot(xs, ys, "o", label="trial", color="tab:blue")
    best, running = -math.inf, []
    for y in ys:
        best = max(best, y)
        running.append(best)
    ax.step(xs, running, where="post", label="best so far", color="tab:red")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{result['target']} validation top-1 (%)")
    ax.set_title(f"study {result['study_name']}: optimisation history")
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def params_figure(result: Mapping[str, Any], log: Mapping[str, bool]) -> Figure:
    """One panel per searched setting: the value of every complete trial against it."""
    done = _finished(result["trials"])
    names = list(dict.fromkeys(k for t in result["trials"] for k in t["params"]))
    rows, cols = panel_grid(max(len(names), 1))
    fig = Figure(figsize=(4 * cols, 3.2 * rows))
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        points = [(t["params"][name], t["value"]) for t in done if name in t["params"]]
        xs = [p[0] for p in points]
        if xs and not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            labels = list(dict.fromkeys(str(x) for x in xs))
            ax.set_xticks(range(len(labels)), labels)
            xs = [labels.index(str(x)) for x in xs]
        ax.scatter(xs, [p[1] for p in points], color="tab:blue")
        if log.get(name):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^-1 labels would overlap
        ax.set_xlabel(name)
        ax.set_ylabel("val top-1 (%)")
    fig.suptitle(f"study {result['study_name']}: validation top-1 against each setting")
    fig.tight_layout()
    return fig


def write_figures(result: Mapping[str, Any], folder: Path, log: Mapping[str, bool]) -> list[Path]:
    """The optimisation history and the per-setting panels as PNGs in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        save_atomic(history_figure(result), folder / HISTORY_FIGURE),
        save_atomic(params_figure(result, log), folder / PARAMS_FIGURE),
    ]
