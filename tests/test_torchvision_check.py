"""A torchvision built for another torch is one line at start-up; runs import only what they use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from icckd_cli.base.torchvision_check import matching_torchvision, pair_error
from tests.helpers import digits_teacher, tiny_experiment

ROOT = Path(__file__).resolve().parents[1]
BROKEN = "operator torchvision::nms does not exist"  # what such a pair raises at import


def broken_torchvision(folder: Path) -> Path:
    """A `torchvision` package that fails to import as one built for another torch does."""
    package = folder / "torchvision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"raise RuntimeError({BROKEN!r})\n")
    return folder


def run_icckd(
    tmp_path: Path, *args: str, shadow: Path | None = None
) -> subprocess.CompletedProcess:
    """`python -m icckd_cli ARGS` in a fresh interpreter, `shadow` first on sys.path."""
    paths = [str(p) for p in (shadow, ROOT) if p is not None]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "icckd_cli", *args]
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_the_matching_release_follows_torchvisions_table() -> None:
    # torch 2.0 came with torchvision 0.15, 2.5 with 0.20, 2.14 with 0.29
    assert matching_torchvision("2.0.1") == "0.15.*"
    assert matching_torchvision("2.5.0+cpu") == "0.20.*"
    assert matching_torchvision("2.14.1") == "0.29.*"
    assert matching_torchvision("3.0.0") == "<the release for it>"  # no rule known: no guess


def test_the_refusal_names_both_versions_and_the_fix() -> None:
    torch_v, vision_v = metadata.version("torch"), metadata.version("torchvision")
    base = torch_v.split("+")[0]
    error = pair_error(RuntimeError(BROKEN + "\nmore lines of the traceback"))
    assert error.exit_code == 1 and error.message == (
        f"torchvision {vision_v} does not work with torch {torch_v} ({BROKEN}); install a "
        f"torchvision built for torch {base}: pip install torch=={base} "
        f"torchvision=={matching_torchvision(torch_v)}"
    )


@pytest.mark.slow
def test_a_broken_pair_is_one_line_at_the_start_of_each_command_that_needs_it(
    tmp_path: Path,
) -> None:
    shadow = broken_torchvision(tmp_path / "shadow")
    digits_teacher(tmp_path / "t.safetensors")
    exp = tmp_path / "exp.toml"
    exp.write_text(
        tiny_experiment(tmp_path, ('name = "tiny"', 'name = "tiny"\ncorruptions = true'))
    )
    commands = [
        ["models"],
        ["fetch-teacher", "crd:resnet56", "--out", "f.safetensors"],
        ["eval", str(tmp_path / "t.safetensors"), "--corruptions"],
        ["experiment", str(exp)],  # corruptions = true: refused before any run trains
        ["train-teacher", "--arch", "tv_resnet18", "--dataset", "digits", "--out", "tv"],
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in commands:
        done = run_icckd(tmp_path, *args, shadow=shadow)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, (args, done.stderr)
        assert lines[0].startswith("error: torchvision ") and BROKEN in lines[0], lines
        assert "install a torchvision built for torch" in lines[0], lines
        assert "Traceback" not in done.stderr and done.stdout == "", (args, done.stdout)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.slow
def test_an_experiment_without_corruptions_never_imports_them(tmp_path: Path) -> None:
    # a run of the tiny matrix, then the modules the interpreter loaded on the way
    script = (
        "import json, sys\n"
        "from icckd_cli.cli import main\n"
        "sys.argv = ['icckd', 'experiment', sys.argv[1], '--format', 'json', '--no-latency']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
    )
    config = tmp_path / "tiny.toml"
    config.write_text(
        tiny_experiment(
            tmp_path,
            ("seeds = [0, 1]", "seeds = [0]"),
            ("train_per_class = 20\ntest_per_class = 5", "train_per_class = 5\ntest_per_class = 3"),
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(config)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["code"] == 0, done.stderr
    assert (tmp_path / "exp/results.json").is_file()  # the matrix really ran
    unused = [m for m in got["modules"] if "corruption" in m or m.split(".")[0] == "torchvision"]
    assert unused == []
