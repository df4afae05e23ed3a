"""benchmarks/bench_gpu.py keeps working: its --smoke mode runs every part on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_benchmark_runs_every_part_in_smoke_mode(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(ROOT / "benchmarks/bench_gpu.py"), "--smoke", "--json", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["smoke"] is True
    engine = report["engine"]
    for name in ("naive_fp32", "engine_fp32", "engine_bf16"):
        assert engine[name] > 0, name  # images/s of each variant
    assert engine["engine_fp32_vs_naive"] == pytest.approx(
        engine["engine_fp32"] / engine["naive_fp32"]
    )
    store, stage = report["store"], report["stage"]
    assert store["wall_s_store"] > 0 and store["wall_s_no_store"] > 0
    assert (stage["runs"], stage["gpus"]) == (2, 0)
    assert stage["local_vs_inprocess"] == pytest.approx(
        stage["wall_s_inprocess"] / stage["wall_s_local"]
    )
    assert json.loads(done.stdout) == report  # the same figures printed
