"""Phases inside one trial: the config's phase plan, the hand-over of a phase's best-epoch
weights, per-phase unfreezing, and resume at and inside a phase."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from trainables.errors import ConfigError
from trainables.train.config import TrainConfig, parse_overrides
from trainables.train.reporting import LocalReporter
from trainables.train.trainable import fit

TWO_PHASES = [{"name": "a", "epochs": 2, "lr": 1e-3, "unfreeze_depth": 0, "scheduler": "step"},
              {"name": "b", "lr": 1e-4, "unfreeze_depth": 1}]


def test_the_last_phase_takes_the_rest_and_each_phase_falls_back_to_the_top_level() -> None:
    cfg = TrainConfig.from_dict({"epochs": 7, "lr": 5e-4, "warmup_epochs": 0.5,
                                 "phases": TWO_PHASES})
    a, b = cfg.phase_plan()
    assert (a.name, a.start, a.epochs, a.lr, a.scheduler, a.unfreeze_depth) == \
        ("a", 0, 2, 1e-3, "step", 0)
    assert (b.name, b.start, b.end, b.lr, b.scheduler, b.warmup_epochs, b.unfreeze_depth) == \
        ("b", 2, 7, 1e-4, "cosine", 0.5, 1)
    assert cfg.replace(lr=2e-4).phase_plan()[1].lr == 1e-4  # set in the phase: kept
    # every phase's epochs given: they are the trial's
    fixed = TrainConfig.from_dict({"epochs": 99, "phases": [{"epochs": 3}, {"epochs": 4}]})
    assert fixed.epochs == 7 and [p.name for p in fixed.phase_plan()] == ["a", "b"]
    assert TrainConfig.from_dict({"epochs": 4}).phase_plan()[0].epochs == 4  # one phase


def test_a_phase_value_is_set_by_its_flat_key_from_the_search_or_the_command_line() -> None:
    cfg = TrainConfig.from_dict({"epochs": 6, "phases": TWO_PHASES, "phase_b_lr": 3e-5,
                                 "phase_a_epochs": 4})
    assert [(p.epochs, p.lr) for p in cfg.phase_plan()] == [(4, 1e-3), (2, 3e-5)]
    assert "phase_b_lr" not in cfg.to_dict()  # folded into the phases: the saved config is whole
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again.phase_plan() == cfg.phase_plan()
    sets = parse_overrides(['phases=[{"epochs": 1}, {"lr": 0.01}]', "phase_b_unfreeze_depth=all"])
    cfg = TrainConfig.from_dict({"epochs": 3, **sets})
    assert [(p.epochs, p.lr, p.unfreeze_depth) for p in cfg.phase_plan()] == \
        [(1, 3e-4, "all"), (2, 0.01, "all")]


@pytest.mark.parametrize(("values", "message"), [
    ({"epochs": 2, "phases": TWO_PHASES}, "phase 'b' has no epochs left: phases a take 2 of "
                                          "epochs=2"),
    ({"phases": TWO_PHASES, "phase_c_lr": 1e-3}, r"phase_c_lr: no phase named 'c' \(phases: a, b\)"),
    ({"phase_b_lr": 1e-3}, "no phase named 'b' .phases: none"),
    ({"phases": [{"lr": 1e-3}, {"lr": 1e-4}]}, "phase 'a': give its epochs"),
    ({"phases": [{"epochs": 2, "lr": -1.0}]}, "lr=-1.0 must be > 0"),
    ({"phases": [{"epochs": 2, "momentum": 0.9}]}, "phase 'a': unknown key 'momentum'"),
    ({"phases": "[{epochs: 2}]"}, "phases=.*not JSON"),
    ({"phases": [{"epochs": 2}, {"name": "a"}]}, "two phases have the same name"),
])
def test_bad_phases_are_one_clear_error(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values)


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("val", 16), ("test", 8)):
        labels = np.arange(n) % 3
        images = rng.integers(0, 60, (n, 32, 32), dtype=np.uint8)
        images[:, 8:24, 8:24] += (80 * labels).astype(np.uint8)[:, None, None]  # learnable
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    path = tmp_path_factory.mktemp("phases") / "tiny.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def tiny(npz: Path, tmp_path: Path, **changes: object) -> TrainConfig:
    values = {"data": str(npz), "dataset": "medmnist_npz", "task": "classes", "num_classes": 3,
              "model": "resnet18", "weights": "none", "image_size": 32, "batch_size": 16,
              "preprocess": "none", "device": "cpu", "cache_dir": str(tmp_path / "cache"),
              "epochs": 5, "warmup_epochs": 0, "phases": TWO_PHASES, "dropout": 0.0}
    return TrainConfig.from_dict({**values, **changes})


def test_each_phase_trains_its_own_stages_from_the_previous_phases_best_epoch(
        npz: Path, tmp_path: Path) -> None:
    # phase a picks its best epoch by lr (max): its first epoch, never its last; phase b at a
    # vanishing lr and depth 0 leaves those weights as they are, so b scores as epoch 1 did
    cfg = tiny(npz, tmp_path, phases=[
        {"epochs": 3, "lr": 1e-2, "unfreeze_depth": 0, "scheduler": "cosine"},
        {"epochs": 1, "lr": 1e-12, "unfreeze_depth": 0}], phase_metric="lr")
    reporter = LocalReporter(None)
    fit(cfg, reporter)
    h = reporter.history
    assert [row["phase"] for row in h] == [1, 1, 1, 2]
    assert h[3]["val/loss"] == pytest.approx(h[0]["val/loss"], rel=1e-5)
    assert abs(h[2]["val/loss"] - h[0]["val/loss"]) > 1e-3  # phase a moved on after epoch 1

    # depth 0 then 1: only the last stage (and the head) ever changes
    torch.manual_seed(0)
    from trainables.model.models import build_model

    start = build_model(cfg).state_dict()
    model = fit(tiny(npz, tmp_path, phases=TWO_PHASES, epochs=3), LocalReporter(None))
    stages = model.stages
    changed = {i for i, names in enumerate(stages) for name in names
               if not torch.equal(start[f"backbone.{name}"], model.state_dict()[f"backbone.{name}"])}
    assert changed == {len(stages) - 1}


@pytest.mark.parametrize("stop", [2, 4])  # at the hand-over, and inside phase b
def test_a_trial_resumed_at_or_inside_a_phase_matches_an_uninterrupted_one(
        npz: Path, tmp_path: Path, stop: int) -> None:
    cfg = tiny(npz, tmp_path, augment="flip")
    whole = LocalReporter(None)
    fit(cfg, whole)
    first = LocalReporter(tmp_path / "run")
    fit(cfg, first, until_epoch=stop)
    last = tmp_path / "run" / "checkpoints" / "last"
    # phase a's best weights travel in its checkpoints for the hand-over; the last phase's not
    assert (last / "phase_best.safetensors").is_file() == (stop == 2)
    resumed = LocalReporter(tmp_path / "resumed", resume=last)
    fit(cfg, resumed)
    assert len(resumed.history) == 5
    for a, b in zip(whole.history, resumed.history, strict=True):
        assert a["val/loss"] == pytest.approx(b["val/loss"], rel=1e-6), (a, b)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)
    if stop == 2:
        phase_best = load_file(str(last / "phase_best.safetensors"))
        assert set(phase_best) == set(load_file(str(last / "model.safetensors")))


def killed_in_phase_b(config: dict) -> None:
    """The first attempt of the `kill` trial dies (SIGKILL) after epoch 3, inside phase b."""
    import os
    import signal
    import time

    from ray import tune

    from trainables.train.reporting import TuneReporter

    cfg = TrainConfig.from_dict({k: v for k, v in config.items() if k != "kill"})
    kill = config["kill"]
    if kill and tune.get_checkpoint() is None:
        fit(cfg, TuneReporter(), until_epoch=3)
        time.sleep(1)  # as a real crash would come: after Ray has taken the report
        os.kill(os.getpid(), signal.SIGKILL)
    fit(cfg, TuneReporter())


@pytest.mark.slow
def test_a_trial_killed_in_phase_b_resumes_in_ray_tune_and_matches_an_uninterrupted_one(
        npz: Path, tmp_path: Path) -> None:
    import ray
    from ray import tune

    cfg = tiny(npz, tmp_path, augment="flip", epochs=5).to_dict()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(killed_in_phase_b, {"cpu": 1}),
            param_space={**cfg, "kill": tune.grid_search([True, False])},
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="phases", verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=1)))
        results = tuner.fit()
    finally:
        ray.shutdown()
    frames = {r.config["kill"]: r.metrics_dataframe for r in results}
    assert all(r.error is None for r in results)
    killed, whole = frames[True], frames[False].set_index("epoch")
    # the retry began at epoch 4, in phase b (no epoch trained twice). Rows of the epochs before
    # the kill can be missing: a restarted trial's result.json is copied back from the storage
    # copy, which Ray may not have synced since epoch 1 under load (JsonLoggerCallback.
    # _restore_from_remote; seen: epochs 2 and 3 gone)
    epochs = killed["epoch"].tolist()
    assert epochs[0] == 1 and epochs[-2:] == [4, 5] and epochs == sorted(set(epochs)), epochs
    killed = killed.set_index("epoch")
    assert whole["phase"].tolist() == [1, 1, 2, 2, 2]
    for column in ("phase", "val/loss", "train/loss", "lr"):  # each kept epoch as uninterrupted
        assert killed[column].tolist() == pytest.approx(whole.loc[killed.index, column].tolist(),
                                                        rel=1e-6)
