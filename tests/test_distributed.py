"""Data-parallel training under torchrun, on CPUs with gloo (two processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from icckd_cli.base.errors import IcckdError
from icckd_cli.data import Batch
from icckd_cli.methods.icc import icc_terms
from icckd_cli.methods.queue import ClassQueue
from icckd_cli.training import distributed as dist
from icckd_cli.training.objectives import TeacherObjective

WORLD = 2
CLASSES, DIM, PIXELS = 4, 5, 12
# rank 0 holds the only pair of class 0, rank 1 the only pair of class 3; classes 1 and 2
# have one image on each rank, so their negatives exist only in the global batch
RANK_LABELS = [[0, 0, 1, 2], [1, 2, 3, 3]]
STEPS = 3


# ----------------------------------------------------------------------------- one process


def test_helpers_are_identities_in_one_process() -> None:
    t = torch.arange(6.0).view(3, 2)
    every, others = dist.gather_rows(t)
    assert torch.equal(every, t) and others.shape == (0, 2)
    assert torch.equal(dist.all_gather_cat(t), t)
    assert dist.any_rank(True) and not dist.any_rank(False)
    assert dist.first_flagged(torch.tensor([4, 1])) == (0, [4, 1])
    assert dist.from_main(max, 3, 7) == 7
    assert dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()

    @dist.fail_together
    def boom() -> None:
        raise ValueError("alone")

    with pytest.raises(ValueError, match="^alone$"):  # no rank prefix outside torchrun
        boom()


def test_only_rank_zero_or_the_failing_rank_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    usage = IcckdError("bad option")
    assert dist.reports(usage)  # not under torchrun
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not dist.reports(usage)  # every rank raises it; rank 0 says it once
    assert dist.reports(dist.RankError("rank 1: disk full"))
    monkeypatch.setenv("RANK", "0")
    assert dist.reports(usage)


# ----------------------------------------------------------------------------- two processes


class TinyNet(nn.Module):
    """A stand-in for the zoo: model(x, return_features=True) -> (logits, features)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(PIXELS, DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x: Tensor, return_features: bool = False) -> Any:
        feats = torch.tanh(self.body(x.flatten(1)))
        logits = self.head(feats)
        return (logits, feats) if return_features else logits


def _net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def _batch(step: int, labels: list[int], offset: int) -> Batch:
    """Two views of len(labels) images, the same on whichever process builds them."""
    g = torch.Generator().manual_seed(1000 * step + offset)
    n = len(labels)
    views = [torch.randn(n, PIXELS, generator=g) for _ in range(2)]
    return Batch(views, torch.tensor(labels), torch.arange(offset, offset + n))


def _objective(queue_size: int) -> TeacherObjective:
    return TeacherObjective(
        CLASSES,
        DIM,
        icc_weight=1.0,
        margin=-1.0,  # no gate: every anchor with a negative counts
        temperature=0.5,
        queue_size=queue_size,
        embedding="features",
    )


def _worker(r: int, store: str, out: str) -> None:
    """One rank: the objective on its share of each step's global batch, and the collectives."""
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=r, world_size=WORLD)
    try:
        net = _net()
        res: dict[str, Any] = {"icc": [], "negatives": []}
        small, large = _objective(queue_size=3), _objective(queue_size=64)
        for step in range(STEPS):
            batch = _batch(step, RANK_LABELS[r], offset=r * len(RANK_LABELS[0]))
            for name, obj in (("small", small), ("large", large)):
                _, stats = obj(net, batch, 0)
                obj.after_step()
                if name == "large":
                    res["icc"].append(stats["icc"])
                    res["negatives"].append(stats["icc_negatives"])
        res["small"] = small.queue.contents()
        res["large"] = large.queue.contents()

        grad = torch.full((3,), float(r + 1))
        p = nn.Parameter(torch.zeros(3))
        p.grad = grad
        dist.average_gradients([p])
        res["grad"] = p.grad
        res["any"] = (dist.any_rank(r == 1), dist.any_rank(False))
        marker = torch.tensor([5, 1]) if r == 1 else torch.tensor([-1, -1])
        res["flagged"] = dist.first_flagged(marker)
        res["from_main"] = dist.from_main(lambda: f"rank {dist.rank()} decided")
        res["gather"] = dist.gather_rows(torch.full((2, 1), float(r)))
        dist.barrier()
        torch.save(res, os.path.join(out, f"rank{r}.pt"))
    finally:
        tdist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each of two spawned gloo processes saw."""
    tmp = tmp_path_factory.mktemp("spawn")
    mp.spawn(_worker, args=(str(tmp / "store"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def _one_process_pushes(queue_size: int) -> tuple[Tensor, Tensor]:
    """The cache of one process that pushes each step's concatenated batch (rank order)."""
    net, queue = _net(), ClassQueue(CLASSES, queue_size, DIM)
    for step in range(STEPS):
        zs, ys = [], []
        for r in range(WORLD):
            batch = _batch(step, RANK_LABELS[r], offset=r * len(RANK_LABELS[0]))
            with torch.no_grad():
                _, feats = net(torch.cat(batch.views), return_features=True)
            zs.append(F.normalize(feats, dim=1))
            ys.append(batch.labels.repeat(2))
        queue.push(torch.cat(zs), torch.cat(ys))
    return queue.contents()


@pytest.mark.parametrize("size", ["small", "large"])
def test_gathered_cache_equals_one_process_with_concatenated_batch(
    ranks: list[dict[str, Any]], size: str
) -> None:
    want_z, want_y = _one_process_pushes(3 if size == "small" else 64)
    for res in ranks:
        z, y = res[size]
        assert torch.equal(y, want_y)
        torch.testing.assert_close(z, want_z, rtol=0, atol=1e-6)
    # with 3 slots per class the oldest entries were evicted, as in one process
    assert len(ranks[0]["small"][1]) == 3 * CLASSES


def test_global_batch_negatives_match_one_process(ranks: list[dict[str, Any]]) -> None:
    """Mean of the ranks' intra-class losses == the loss of one process on the global batch."""
    net, queue = _net(), ClassQueue(CLASSES, 64, DIM)
    for step in range(STEPS):
        batches = [
            _batch(step, RANK_LABELS[r], offset=r * len(RANK_LABELS[0])) for r in range(WORLD)
        ]
        views = [torch.cat([b.views[v] for b in batches]) for v in range(2)]
        labels = torch.cat([b.labels for b in batches])
        with torch.no_grad():
            _, feats = net(torch.cat(views), return_features=True)
        z1, z2 = feats.chunk(2)
        cached, cached_labels = queue.contents()
        want = icc_terms(
            z1,
            z2,
            labels,
            temperature=0.5,
            queue=cached if len(cached) else None,
            queue_labels=cached_labels if len(cached) else None,
        )
        got = torch.stack([res["icc"][step] for res in ranks]).mean()
        torch.testing.assert_close(got, want.loss, rtol=1e-5, atol=1e-6)
        negatives = torch.stack([res["negatives"][step] for res in ranks]).mean()
        torch.testing.assert_close(negatives, want.mean_negatives)
        # one process caches in its own batch order; the loss depends only on which entries
        queue.push(F.normalize(feats, dim=1), labels.repeat(2))


def test_collectives_agree_across_ranks(ranks: list[dict[str, Any]]) -> None:
    for res in ranks:
        assert torch.equal(res["grad"], torch.full((3,), 1.5))  # mean of 1 and 2
        assert res["any"] == (True, False)
        assert res["flagged"] == (1, [5, 1])
        assert res["from_main"] == "rank 0 decided"
    every, others = ranks[1]["gather"]
    assert every.flatten().tolist() == [0.0, 0.0, 1.0, 1.0]
    assert others.flatten().tolist() == [0.0, 0.0]


# ----------------------------------------------------------------------------- torchrun

# The CLI under torchrun, with a probe on the trainer: each rank saves its weights, cache
# and last training embeddings, and rank 1 can be made to fail, diverge or be interrupted.
PROBE_SCRIPT = textwrap.dedent(
    """
    import os, runpy, signal
    import torch
    from icckd_cli.training import distributed as dist
    from icckd_cli.commands import runs
    from icckd_cli.base.errors import IcckdError

    FAULT = os.environ.get("PROBE_FAULT", "")

    class Probe(runs.Trainer):
        def run(self):
            last = {}
            def keep(module, args, out):
                if module.training:
                    last["z"] = out[1].detach().float()
            handle = self.eval_model.register_forward_hook(keep)
            if FAULT and dist.rank() == 1:
                self.inject()
            st = super().run()
            handle.remove()
            torch.save(
                {
                    "params": dict(self.eval_model.named_parameters()),
                    "queue": self.objective.queue.contents(),
                    "pushed": self.objective.queue.pushed.sum().item(),
                    "last_z": last["z"],
                },
                os.path.join(os.environ["PROBE_DIR"], f"rank{dist.rank()}.pt"),
            )
            return st

        def inject(self):
            original, step = self.objective.forward, [0]
            def forward(model, batch, epoch):
                step[0] += 1
                loss, parts = original(model, batch, epoch)
                if step[0] == 3:
                    if FAULT == "error":
                        raise IcckdError("injected failure")
                    if FAULT == "stop":
                        os.kill(os.getpid(), signal.SIGINT)
                    if FAULT == "nan":
                        loss = loss * float("nan")
                return loss, parts
            self.objective.forward = forward

    runs.Trainer = Probe
    runpy.run_module("icckd_cli", run_name="__main__")
    """
)


def torchrun(tmp: Path, fault: str = "") -> tuple[int, list[str], list[str], Path]:
    """Run train-teacher on 2 CPU processes; (exit code, stdout and stderr per rank, --out)."""
    script, out, logs = tmp / "probe.py", tmp / "run", tmp / "logs"
    script.write_text(PROBE_SCRIPT)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PROBE_DIR": str(tmp),
        "PROBE_FAULT": fault,
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "--log-dir", str(logs), "--redirects", "3",
        str(script), "train-teacher", "--arch", "resnet8", "--dataset", "digits",
        "--epochs", "1", "--train-per-class", "40", "--test-per-class", "10",
        "--batch-size", "16", "--out", str(out), "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    stdout, stderr = [], []
    for r in range(WORLD):
        (folder,) = logs.glob(f"*/attempt_0/{r}")
        stdout.append((folder / "stdout.log").read_text())
        stderr.append((folder / "stderr.log").read_text())
    return proc.returncode, stdout, stderr, out


@pytest.mark.slow
def test_torchrun_two_ranks_train_in_step(tmp_path: Path) -> None:
    code, stdout, stderr, out = torchrun(tmp_path)
    assert code == 0, stderr
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert "teacher finished" in stdout[0] and "epoch   1/1" in stderr[0]
    assert stdout[1] == "" and stderr[1] == "", (stdout[1], stderr[1])  # rank 1 prints nothing
    # one TensorBoard event file (its name holds the writer's pid): rank 0's alone
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name, p in ranks[0]["params"].items():
        assert torch.equal(p, ranks[1]["params"][name]), name
    # 400 images, 200 per rank, two views each: a cache fed by rank 0 alone would count 400
    assert ranks[0]["pushed"] == ranks[1]["pushed"] == 2 * 400
    (z0, y0), (z1, y1) = ranks[0]["queue"], ranks[1]["queue"]
    assert torch.equal(y0, y1) and torch.equal(z0, z1)
    for r, res in enumerate(ranks):  # each rank's last embeddings are in the shared cache
        last = F.normalize(res["last_z"], dim=1)
        nearest = (last[:, None] - z0[None]).norm(dim=2).min(dim=1).values  # exact, unlike cdist
        assert nearest.max() < 1e-5, f"rank {r}'s last batch is missing from the cache"


@pytest.mark.slow
def test_failure_on_one_rank_stops_all_with_its_message(tmp_path: Path) -> None:
    code, stdout, stderr, out = torchrun(tmp_path, fault="error")
    assert code != 0
    assert stderr[1].strip() == "error: rank 1: injected failure", stderr[1]
    assert stderr[0] == "" and stdout[0] == "", (stdout[0], stderr[0])  # stopped quietly
    assert not (out / "model.safetensors").exists()


@pytest.mark.slow
def test_nan_on_one_rank_stops_all(tmp_path: Path) -> None:
    code, stdout, stderr, out = torchrun(tmp_path, fault="nan")
    assert code != 0
    errors = stderr[0].strip().splitlines()
    assert len(errors) == 1, stderr[0] and errors[0].startswith(
        "error: the loss part 'loss' became NaN"
    )
    assert "step 3 on rank 1;" in errors[0]
    assert stderr[1] == "" and stdout[1] == "", (stdout[1], stderr[1])


@pytest.mark.slow
def test_interrupt_on_one_rank_stops_all(tmp_path: Path) -> None:
    code, stdout, stderr, out = torchrun(tmp_path, fault="stop")
    assert code != 0
    assert stderr[0].startswith(f"interrupted: state saved in {out}")
    assert stderr[1] == "" and stdout[1] == "", (stdout[1], stderr[1])
    assert (out / "state.safetensors").exists() and not (out / "model.safetensors").exists()


TINY_EXPERIMENT = """
[experiment]
name = "tiny"
dataset = "digits"
train_per_class = 20
test_per_class = 5
seeds = [0]
out = "{out}"

[teacher]
arch = "resnet8"
epochs = 1
batch_size = 16

[[teachers]]
name = "ce"
icc_weight = 0

[student]
arch = "resnet8"
epochs = 1
batch_size = 16

[[students]]
name = "kd"
method = "kd"
"""


@pytest.mark.slow
def test_experiment_under_torchrun_runs_each_run_once_and_prints_once(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_EXPERIMENT.format(out=out))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "icckd_cli", "experiment", str(config), "--device", "cpu", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)  # one JSON document: rank 1 printed nothing
    assert results and (out / "results.json").is_file()
    models = sorted(p.relative_to(out).as_posix() for p in out.rglob("model.safetensors"))
    assert models == ["students/ce/kd/seed0/model.safetensors",
                      "teachers/ce/seed0/model.safetensors"]  # fmt: skip
    assert done.stderr.count("run 2/2: students/ce/kd/seed0: training") == 1


CACHE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from icckd_cli.training import distributed as dist
    from icckd_cli.commands import runs
    from icckd_cli.settings.config import DistillConfig, build

    dist.init_from_env()
    base, cache = json.loads(sys.argv[1]), sys.argv[2]
    for name, more in (("plain", {}), ("cached", {"teacher_cache": cache})):
        cfg = {**base, "out": base["out"] + "/" + name, **more}
        runs.distill(build(DistillConfig, cfg), lambda event, info: None)
    """
)


@pytest.mark.slow
def test_torchrun_ranks_write_and_read_their_own_teacher_cache_shard(tmp_path: Path) -> None:
    from icckd_cli.training import store as teacher_store
    from tests.helpers import assert_same_weights, digits_teacher

    digits_teacher(tmp_path / "teacher.safetensors")
    script = tmp_path / "cache.py"
    script.write_text(CACHE_SCRIPT)
    base = {
        "teacher": str(tmp_path / "teacher.safetensors"), "arch": "resnet8",
        "dataset": "digits", "train_per_class": 10, "test_per_class": 2, "epochs": 1,
        "batch_size": 16, "device": "cpu", "method": "crd", "crd_nce_k": 16,
        "teacher_cache_dtype": "float32", "out": str(tmp_path),
    }  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cache = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), json.dumps(base), str(cache)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_weights(tmp_path / "plain", tmp_path / "cached")
    shards = [cache / f"rank{r}-of-2" for r in range(WORLD)]
    assert sorted(p.name for p in cache.iterdir()) == [s.name for s in shards]
    seen = []
    for shard in shards:
        assert teacher_store.status(shard) == "complete"
        seen.append(set(np.load(shard / "index.npy")[0].tolist()))
    # 100 images, 50 a rank: disjoint halves of one permutation
    assert len(seen[0]) == len(seen[1]) == 50 and not seen[0] & seen[1]
