"""Issue 26 through the commands: --imbalance-factor, eval's per-class keys and groups,
eval --corruptions (built-in and a CIFAR-10-C-layout folder), and predictions.npy."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from icckd_cli.base.errors import UsageError
from icckd_cli.cli import main
from icckd_cli.commands.robustness.scoring import summarise
from icckd_cli.data import load_dataset
from icckd_cli.data.longtail import longtail_counts
from icckd_cli.metrics.transfer import read_predictions
from icckd_cli.models.loading import load_any_model
from tests.helpers import icckd

RUN = ["--arch", "resnet8", "--dataset", "digits", "--test-per-class", "2", "--epochs", "1",
       "--batch-size", "16", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def lt_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A teacher trained on a long-tailed digits split (F = 10, n_max = 30), and its stderr."""
    out = tmp_path_factory.mktemp("lt") / "run"
    args = ["train-teacher", *RUN, "--train-per-class", "30", "--imbalance-factor", "10",
            "--out", str(out)]  # fmt: skip
    err, old = io.StringIO(), sys.argv
    sys.argv = ["icckd", *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main()
    except SystemExit as exc:
        assert not exc.code, err.getvalue()
    finally:
        sys.argv = old
    return out, err.getvalue()


EXPECTED = longtail_counts(30, 10, 10)  # [30, 23, 17, 13, 10, 8, 6, 5, 3, 3]


def test_a_factor_below_one_is_a_one_line_error_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for command in ("train-teacher", "distill"):
        r = icckd(capsys, command, *RUN, "--imbalance-factor", "0.5", "--out", tmp_path / "x")
        assert r.code == 2
        assert r.err.strip() == (
            "error: invalid value for --imbalance-factor: 0.5; give a factor of at least 1 "
            "(1 is balanced; 100 is the CIFAR-LT standard)"
        )
        assert not (tmp_path / "x").exists()


def test_the_first_line_says_the_counts_and_the_checkpoint_records_them(
    lt_run: tuple[Path, str],
) -> None:
    out, err = lt_run
    assert EXPECTED == [30, 23, 17, 13, 10, 8, 6, 5, 3, 3]  # by hand: floor(30 * 10^(-i/9))
    first = err.splitlines()[0]
    assert first == (
        "long-tailed training split (--imbalance-factor 10): 30 to 3 images per class, "
        f"{sum(EXPECTED)} in all"
    )
    from icckd_cli.base.checkpoint import read_metadata

    dataset = read_metadata(out / "model.safetensors")["dataset"]
    assert dataset["train_counts"] == EXPECTED and dataset["imbalance_factor"] == 10


def test_eval_json_has_per_class_balanced_and_groups_from_known_counts(
    capsys: pytest.CaptureFixture[str], lt_run: tuple[Path, str]
) -> None:
    out, _ = lt_run
    r = icckd(capsys, "eval", out / "model.safetensors", "--device", "cpu", "--format", "json")
    assert r.code == 0, r.err
    m = r.json()
    per_class = m["per_class_top1"]
    assert len(per_class) == 10 and all(a in (0.0, 50.0, 100.0) for a in per_class)  # 2 each
    assert m["balanced_top1"] == pytest.approx(sum(per_class) / 10)
    assert m["balanced_top1"] == pytest.approx(m["top1"])  # a balanced test split
    assert m["train_counts"] == EXPECTED
    medium = [a for a, n in zip(per_class, EXPECTED, strict=True) if 20 <= n <= 100]
    few = [a for a, n in zip(per_class, EXPECTED, strict=True) if n < 20]
    assert m["groups"] == {
        "many": None,  # no class has more than 100 training images
        "medium": pytest.approx(sum(medium) / len(medium)),  # classes 0 and 1
        "few": pytest.approx(sum(few) / len(few)),
    }
    train = icckd(capsys, "eval", out / "model.safetensors", "--device", "cpu", "--split",
                  "train", "--format", "json")  # fmt: skip
    assert train.code == 0 and train.json()["n"] == sum(EXPECTED)  # the images it trained on


def test_predictions_npy_holds_the_final_models_test_predictions(
    lt_run: tuple[Path, str],
) -> None:
    out, _ = lt_run
    test = load_dataset("digits", test_per_class=2, train_per_class=1).test
    pred = read_predictions(out / "predictions.npy", len(test.labels), 10)
    # the final model's argmax over the test split, computed here from the checkpoint alone:
    # images in 0..1 normalised with the statistics it records, in the split's order
    model, meta = load_any_model(out / "model.safetensors")
    mean = torch.tensor(meta["dataset"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["dataset"]["std"]).view(1, 3, 1, 1)
    with torch.inference_mode():
        logits = model.eval()((test.images.float() / 255 - mean) / std)
    assert pred.tolist() == logits.argmax(dim=1).tolist()
    final = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 100.0 * float((pred == test.labels.numpy()).mean()) == pytest.approx(final["top1"])


def test_a_run_keeps_its_last_test_pass_as_predictions_npy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from icckd_cli.commands import predictions
    from icckd_cli.commands.evaluation import checkpoint_channels_last
    from icckd_cli.models.loading import load_any_model
    from icckd_cli.training.scoring import split_logits

    def no_extra_pass(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the test split was run again for predictions.npy")

    monkeypatch.setattr(predictions, "test_predictions", no_extra_pass)
    out = tmp_path / "run"
    r = icckd(capsys, "train-teacher", *RUN, "--train-per-class", "3", "--epochs", "2",
              "--eval-every", "5", "--out", out)  # fmt: skip
    assert r.code == 0, r.err
    data = load_dataset("digits", test_per_class=2, train_per_class=1)
    model, meta = load_any_model(out / "model.safetensors", option=None)
    channels_last = checkpoint_channels_last(meta, torch.device("cpu"))  # as the run ran
    logits, labels = split_logits(model, data.test, data.spec, 512, channels_last)
    saved = read_predictions(out / "predictions.npy", len(labels), 10)
    assert np.array_equal(saved, logits.argmax(dim=1).numpy())  # the final model's, exactly
    # without the kept pass (a resumed run whose last epoch was already evaluated, a bf16
    # run) the file is the same, from a pass of its own
    monkeypatch.undo()
    again = tmp_path / "again"
    again.mkdir()
    cfg = SimpleNamespace(eval_batch_size=512)
    path = predictions.save_test_predictions(again, model, data, cfg, channels_last)
    assert path is not None and np.array_equal(read_predictions(path, len(labels), 10), saved)


def test_eval_corruptions_json_keys_on_the_builtin_suite(
    capsys: pytest.CaptureFixture[str], lt_run: tuple[Path, str]
) -> None:
    out, _ = lt_run
    args = ["eval", out / "model.safetensors", "--device", "cpu", "--corruptions"]
    r = icckd(capsys, *args, "--format", "json")
    assert r.code == 0, r.err
    c = r.json()["corruptions"]
    assert set(c) == {"suite", "clean_top1", "mean_top1", "relative", "results"}
    assert c["suite"] == "icckd-builtin"
    assert len(c["results"]) == 50 and set(c["results"][0]) == {"corruption", "severity", "top1"}
    assert c["mean_top1"] == pytest.approx(sum(x["top1"] for x in c["results"]) / 50)
    assert c["clean_top1"] == pytest.approx(r.json()["top1"])
    table = icckd(capsys, *args)
    assert table.code == 0 and "mean / clean" in table.out and "gaussian_noise" in table.out


def test_eval_corruptions_reuses_the_test_pass_for_the_clean_top1(
    capsys: pytest.CaptureFixture[str], lt_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from icckd_cli.commands.robustness import scoring

    passes: list[int] = []  # one evaluation per pass over a split of images
    original = scoring.evaluate

    def counted(*args: Any, **kwargs: Any) -> dict[str, float]:
        passes.append(len(args[1]))
        return original(*args, **kwargs)

    monkeypatch.setattr(scoring, "evaluate", counted)
    out, _ = lt_run
    r = icckd(capsys, "eval", out / "model.safetensors", "--device", "cpu", "--corruptions",
              "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    assert len(passes) == 50  # the 10 x 5 corrupted copies; the clean pass was eval's own
    assert r.json()["corruptions"]["clean_top1"] == r.json()["top1"]  # the same number
    # on another split the clean top-1 is still the test split's: one pass of its own
    passes.clear()
    r = icckd(capsys, "eval", out / "model.safetensors", "--device", "cpu", "--corruptions",
              "--split", "train", "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    assert len(passes) == 51


def _release(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    folder.mkdir()
    np.save(folder / "gaussian_noise.npy", np.concatenate([images] * 5))
    np.save(folder / "labels.npy", labels)
    return folder


def test_a_release_of_clean_images_scores_the_clean_top1_at_every_severity(
    capsys: pytest.CaptureFixture[str], lt_run: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = lt_run
    test = load_dataset("digits", test_per_class=2, train_per_class=1).test
    images = test.images.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3) uint8, as released
    folder = _release(tmp_path / "c", images, test.labels.numpy())
    r = icckd(capsys, "eval", out / "model.safetensors", "--device", "cpu",
              "--corruptions-dir", folder, "--format", "json")  # fmt: skip
    assert r.code == 0, r.err
    c = r.json()["corruptions"]
    assert c["suite"] == str(folder)
    assert c["clean_top1"] > 0  # the run classifies some test images, so relative is defined
    assert [x["top1"] for x in c["results"]] == [c["clean_top1"]] * 5
    assert c["mean_top1"] == c["clean_top1"] and c["relative"] == 1.0


def test_relative_is_none_where_the_clean_top1_or_the_results_leave_it_undefined() -> None:
    one = [{"corruption": "gaussian_noise", "severity": 1, "top1": 20.0}]
    assert summarise("s", 40.0, one)["relative"] == 0.5
    assert summarise("s", 0.0, one)["relative"] is None  # no clean image right: no ratio
    empty = summarise("s", 40.0, [])
    assert (empty["mean_top1"], empty["relative"]) == (None, None)


def test_bad_corruption_folders_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], lt_run: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = lt_run
    ckpt = out / "model.safetensors"
    ok = np.zeros((4, 32, 32, 3), np.uint8)
    labels = np.arange(4) % 10
    no_labels = _release(tmp_path / "a", ok, labels)
    (no_labels / "labels.npy").unlink()
    wrong_shape = _release(tmp_path / "b", ok[:, :, :, :2].copy(), labels)
    small = _release(tmp_path / "d", np.zeros((4, 16, 16, 3), np.uint8), labels)
    many = _release(tmp_path / "e", ok, np.arange(4) * 30)  # labels past digits' 10 classes
    wanted = {
        no_labels: f"{no_labels} has no labels.npy",
        wrong_shape: "a corruption file is uint8 (5 x N, H, W, 3)",
        small: "takes 32x32 images with 3 channels but",
        many: "holds labels up to 90 but",
    }
    for folder, text in wanted.items():
        r = icckd(capsys, "eval", ckpt, "--device", "cpu", "--corruptions-dir", folder)
        assert r.code == 2 and r.err.count("\n") == 1, r.err
        assert r.err.startswith("error: ") and text in r.err
        assert "Traceback" not in r.err


@pytest.mark.slow
def test_factor_one_trains_bit_identical_weights(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tiny = [*RUN, "--train-per-class", "3"]
    assert icckd(capsys, "train-teacher", *tiny, "--out", tmp_path / "a").code == 0
    r = icckd(capsys, "train-teacher", *tiny, "--imbalance-factor", "1", "--out", tmp_path / "b")
    assert r.code == 0 and "long-tailed" not in r.err
    a = load_file(str(tmp_path / "a/model.safetensors"))
    b = load_file(str(tmp_path / "b/model.safetensors"))
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)


def test_the_experiment_passes_its_factor_to_teachers_and_students(tmp_path: Path) -> None:
    from tests.helpers import parse_experiment_text, tiny_experiment

    lt = ('device = "cpu"', 'device = "cpu"\nimbalance_factor = 10')
    exp = parse_experiment_text(tiny_experiment(tmp_path, lt))
    assert {r.kind for r in exp.runs} == {"teacher", "student", "baseline"}
    assert all(r.config.imbalance_factor == 10 for r in exp.runs)
    bad = ('device = "cpu"', 'device = "cpu"\nimbalance_factor = 0.5')
    with pytest.raises(UsageError) as err:
        parse_experiment_text(tiny_experiment(tmp_path, bad))
    assert err.value.message == (
        "x.toml: [experiment]: invalid imbalance_factor = 0.5: invalid value for "
        "--imbalance-factor: 0.5; give a factor of at least 1 (1 is balanced; 100 is the "
        "CIFAR-LT standard)"
    )


def test_the_validation_and_test_splits_stay_balanced_under_a_long_tail() -> None:
    from icckd_cli.data import Holdout, LoadOptions
    from icckd_cli.data.imbalance import apply_imbalance

    def digits() -> Any:
        options = LoadOptions(holdout=Holdout(per_class=5))
        return load_dataset("digits", train_per_class=30, test_per_class=3, options=options)

    balanced, lt = digits(), digits()
    assert apply_imbalance(lt, 10) == EXPECTED
    assert torch.bincount(lt.train.labels, minlength=10).tolist() == EXPECTED
    for name, per_class in (("val", 5), ("test", 3)):
        split, same = getattr(lt, name), getattr(balanced, name)
        assert torch.bincount(split.labels, minlength=10).tolist() == [per_class] * 10
        assert torch.equal(split.images, same.images)  # the very images of the balanced run
    # the long tail keeps training images only: none of them is a validation image
    val = {bytes(x.numpy()) for x in lt.val.images}
    assert not any(bytes(x.numpy()) in val for x in lt.train.images)
