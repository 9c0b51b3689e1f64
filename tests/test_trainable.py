"""The trainable outside Ray: determinism, resume, NaN, device plan, refusing bad data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import tiny_config
from trainables.errors import ConfigError, DatasetError, NonFiniteLossError
from trainables.train.checkpoint import is_checkpoint
from trainables.train.config import TrainConfig
from trainables.train.loop import lr_factor, plan_runtime
from trainables.train.reporting import LocalReporter, local_run
from trainables.train.trainable import fit, train

METRIC_KEYS = {"epoch", "lr", "train/loss", "train/images_per_s", "train/seconds", "val/loss",
               "val/kappa", "val/accuracy", "val/f1_macro"}


def run(cfg: TrainConfig, out: Path | None = None, resume: Path | None = None) -> list[dict]:
    reporter = LocalReporter(out, resume=resume)
    with local_run(reporter):
        train(cfg.to_dict())  # the same entry point Ray Tune calls
    return reporter.history


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in ("train/images_per_s", "train/seconds")}
            for h in history]


def test_epochs_are_reported_with_checkpoints(course_demo: Path, tmp_path: Path) -> None:
    history = run(tiny_config(course_demo, attention=True, augment="flip+rotate+scale+color"),
                  tmp_path)
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]) == METRIC_KEYS
    assert all(np.isfinite(v) for h in history for v in h.values())
    assert json.loads((tmp_path / "metrics.json").read_text()) == history
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["attention"] is True and config["data"] == str(course_demo)
    assert is_checkpoint(tmp_path / "checkpoints" / "last")
    assert is_checkpoint(tmp_path / "checkpoints" / "best")
    from safetensors import safe_open
    with safe_open(str(tmp_path / "checkpoints" / "last" / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["config"]) == config  # the config travels with the weights


def test_same_seed_same_numbers(course_demo: Path) -> None:
    cfg = tiny_config(course_demo, augment="flip+rotate+color", dropout=0.3)
    first, second = run(cfg), run(cfg)
    assert without_timing(first) == without_timing(second)
    other = run(cfg.replace(seed=1))
    assert without_timing(other) != without_timing(first)


def test_resume_continues_from_the_saved_epoch(course_demo: Path, tmp_path: Path) -> None:
    cfg = tiny_config(course_demo, epochs=3, augment="flip+rotate")
    straight = run(cfg)
    stopped = run(cfg.replace(epochs=1), tmp_path / "a")  # as if stopped after epoch 1
    assert len(stopped) == 1
    resumed = run(cfg, tmp_path / "b", resume=tmp_path / "a" / "checkpoints" / "last")
    assert [h["epoch"] for h in resumed] == [1, 2, 3]  # the history carries over
    for a, b in zip(without_timing(straight), without_timing(resumed), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key


def test_a_kill_anywhere_in_a_checkpoint_write_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    """A local run SIGKILLed before each file operation of its second epoch's report in turn
    (tests/kill_points.py): every run resumes from a whole checkpoint (epoch 1's or epoch 2's;
    between the two renames only `last.old` is left, where `--resume` finds it), keeps a whole
    best checkpoint and a metrics.json that reads."""
    from trainables.train.checkpoint import load_checkpoint
    from trainables.train.reporting import kept

    done = subprocess.run([sys.executable, "-m", "tests.kill_points", str(tmp_path)],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    killed = [k for k, v in outcome.items() if v == "killed"]
    assert len(killed) >= 5 and list(outcome.values())[-1] == "done"
    assert any(not (tmp_path / k / "checkpoints" / "last").exists() for k in killed)

    def load(folder: Path) -> dict:
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.AdamW(model.parameters())
        return load_checkpoint(folder, model=model, optimizer=optimizer,
                               scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0),
                               scaler=torch.amp.GradScaler("cpu", enabled=False))

    for k in killed:
        out = tmp_path / k
        reporter = LocalReporter(None, resume=out)
        state = reporter.restore(load)
        assert state is not None and state["epoch"] in (1, 2), k
        assert [h["epoch"] for h in reporter.history] == list(range(1, state["epoch"] + 1))
        assert is_checkpoint(kept(out / "checkpoints" / "best")), k
        assert len(json.loads((out / "metrics.json").read_text())) in (1, 2), k


def test_resume_from_a_folder_without_checkpoint_is_an_error(course_demo: Path,
                                                             tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint there"):
        run(tiny_config(course_demo), resume=tmp_path)


def test_nan_loss_ends_the_trial_with_a_clear_error(course_demo: Path, tmp_path: Path) -> None:
    # one step per epoch: epoch 1's loss is computed before the absurd update, epoch 2's after
    cfg = tiny_config(course_demo, lr=1e30, epochs=3, max_train_batches=1, warmup_epochs=0)
    reporter = LocalReporter(tmp_path)
    with (pytest.raises(NonFiniteLossError, match=r"train loss is (nan|inf) at epoch 2, step 1"),
          local_run(reporter)):
        train(cfg.to_dict())
    # the epoch finished before the NaN is kept on disk, with its checkpoint
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in saved] == [1]
    assert is_checkpoint(tmp_path / "checkpoints" / "last")


def test_training_refuses_a_dataset_that_fails_the_check(course_copy: Path) -> None:
    (course_copy / "val" / "108" / "108_l1.jpg").unlink()
    with pytest.raises(DatasetError, match=r"val.csv row \d+: image .*108_l1.jpg not found"):
        run(tiny_config(course_copy))


def test_unknown_config_key_is_an_error_listing_valid_keys(course_demo: Path) -> None:
    with pytest.raises(ConfigError, match="valid keys: data, dataset"):
        train({**tiny_config(course_demo).to_dict(), "learning_rate": 0.1})


@pytest.mark.parametrize("cuda", [False, True])
def test_runtime_uses_the_gpu_only_when_there_is_one(cuda: bool) -> None:
    plan = plan_runtime(TrainConfig(), cuda_available=cuda)
    assert plan.device.type == ("cuda" if cuda else "cpu")
    assert plan.amp is cuda and plan.channels_last is cuda
    assert plan_runtime(TrainConfig(device="cpu"), cuda_available=cuda).device.type == "cpu"
    assert not plan_runtime(TrainConfig(amp=False), cuda_available=cuda).amp
    # the reader thread overlaps reads with a GPU's compute; on a CPU it only competes
    assert plan.prefetch is cuda
    assert plan_runtime(TrainConfig(prefetch="on"), cuda_available=cuda).prefetch
    assert not plan_runtime(TrainConfig(prefetch="off"), cuda_available=cuda).prefetch
    assert not plan_runtime(TrainConfig(device="cpu"), cuda_available=cuda).prefetch


def test_asking_for_cuda_without_one_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        plan_runtime(TrainConfig(device="cuda"), cuda_available=False)


def test_lr_schedules() -> None:
    kw = {"total": 100, "warmup": 10}
    assert lr_factor(0, kind="cosine", **kw) == pytest.approx(0.1)
    assert lr_factor(9, kind="cosine", **kw) == pytest.approx(1.0)
    assert lr_factor(99, kind="cosine", **kw) < 0.01
    assert lr_factor(50, kind="step", **kw) == 1.0 and lr_factor(70, kind="step", **kw) == 0.1
    assert lr_factor(99, kind="constant", **kw) == 1.0


def test_channels_last_model_runs_on_cpu(course_demo: Path) -> None:
    # the memory format is a CUDA choice, but the code path must also be right on the CPU
    cfg = tiny_config(course_demo, epochs=1)
    model = fit(cfg, LocalReporter())
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 64).contiguous(
            memory_format=torch.channels_last)).shape == (2, 5)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "search.train", *args], capture_output=True,
                          text=True)


def test_cli_trains_and_writes_its_folder(course_demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli("deepdrid_finetune", "--data", str(course_demo), "--epochs", "1", "--out",
                 str(out), "--set", "model=resnet18", "--set", "weights=none", "--set",
                 "image_size=64", "--set", "max_train_batches=2", "--set", "batch_size=8")
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1" in result.stdout and "QWK" in result.stdout
    assert len(json.loads((out / "metrics.json").read_text())) == 1
    assert json.loads((out / "config.json").read_text())["image_size"] == 64


@pytest.mark.parametrize("args,message", [
    (["--set", "weight_dcay=0.1"],
     "unknown config key 'weight_dcay' (did you mean 'weight_decay'?); valid keys:"),
    (["--set", "batch_size=big"], "batch_size='big': expected int"),
    (["--set", "augment=flip+warp"], "augment='flip+warp': use 'none' or ops joined by '+'"),
    (["--set", "unfreeze_depth=-1"], "unfreeze_depth=-1"),
])
def test_cli_rejects_bad_settings_without_traceback(course_demo: Path, args: list[str],
                                                    message: str) -> None:
    result = cli("deepdrid_finetune", "--data", str(course_demo), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unknown_experiment_lists_known_ones() -> None:
    result = cli("deepdrid_nope", "--demo")
    assert result.returncode == 2
    assert "known: deepdrid_finetune, deepdrid_attention" in result.stderr


def test_cli_bad_dataset_exits_before_training(course_copy: Path, tmp_path: Path) -> None:
    shutil.rmtree(course_copy / "test")
    result = cli("deepdrid_finetune", "--data", str(course_copy), "--out", str(tmp_path / "x"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "test.csv row 2" in result.stderr and "not found" in result.stderr
    assert "epoch" not in result.stdout


def test_the_amp_and_channels_last_path_trains(course_demo: Path) -> None:
    """The CUDA path (float16 autocast, GradScaler, channels_last), run on the CPU for its logic."""
    from trainables.data.trial_data import load_data
    from trainables.model.models import build_model
    from trainables.tasks.objectives import make_objective
    from trainables.train.augment import BatchAugment
    from trainables.train.loop import Runtime, evaluate, train_one_epoch

    cfg = tiny_config(course_demo)
    runtime = Runtime(torch.device("cpu"), amp=True, channels_last=True)
    data = load_data(cfg)
    model = build_model(cfg).to(memory_format=torch.channels_last)
    before = model.classifier.weight.detach().clone()
    augment = BatchAugment(cfg.augment, (0.5,) * 3, (0.25,) * 3, runtime.device, True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    train = train_one_epoch(
        model, data.images["train"], data.labels["train"], cfg=cfg, epoch=0, optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), scaler=scaler,
        augment=augment, runtime=runtime,
        objective=make_objective(cfg, data.labels["train"], runtime.device))
    assert np.isfinite(train["train/loss"])
    assert scaler.get_scale() > 1  # the loss was scaled
    assert not torch.equal(before, model.classifier.weight)  # and the steps were taken
    val, probs = evaluate(model, data.images["val"], data.labels["val"], cfg=cfg,
                          augment=augment, runtime=runtime)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert np.isfinite(val["val/loss"])


def test_cli_resume_continues_a_stopped_run_as_if_it_never_stopped(course_demo: Path,
                                                                   tmp_path: Path) -> None:
    from spaces import get_experiment
    from trainables.train.config import parse_overrides

    sets = ["model=resnet18", "weights=none", "image_size=64", "max_train_batches=2",
            "batch_size=8", "augment=flip+rotate"]
    common = ["deepdrid_finetune", "--data", str(course_demo)]
    for pair in sets:
        common += ["--set", pair]
    stopped = cli(*common, "--epochs", "1", "--out", str(tmp_path / "stopped"))  # epoch 1 alike
    resumed = cli(*common, "--epochs", "2", "--out", str(tmp_path / "resumed"), "--resume",
                  str(tmp_path / "stopped"))
    for result in (stopped, resumed):
        assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in resumed.stdout and "epoch 1/2" not in resumed.stdout  # not redone
    # the same config the CLI builds, trained straight through in this process
    straight = get_experiment("deepdrid_finetune").config(demo=False, overrides={
        **parse_overrides(sets), "data": str(course_demo), "epochs": 2})
    want = without_timing(run(straight))
    got = without_timing(json.loads((tmp_path / "resumed" / "metrics.json").read_text()))
    assert [h["epoch"] for h in got] == [1, 2]  # the stopped run's epoch carried over
    for a, b in zip(want, got, strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
