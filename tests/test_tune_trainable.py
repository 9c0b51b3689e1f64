"""The trainable inside a real local Ray Tune: reports, checkpoints, resume after a crash."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from tests.helpers import tiny_config  # noqa: E402
from trainables.train.trainable import train  # noqa: E402


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # one logical GPU: enough for Ray to schedule a GPU trial on this CPU-only machine
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def crash_after_first_epoch(config: dict[str, Any]) -> None:
    """The first attempt trains one epoch for real, then dies; Ray retries from its checkpoint."""
    if tune.get_checkpoint() is None:
        train({**config, "epochs": 1})
        # a moment later, as a real crash would be: one that raises within microseconds of
        # its report can beat Ray to processing that report (seen once in 5 runs: the epoch's
        # row was missing from progress.csv, though its checkpoint was kept)
        time.sleep(1)
        raise RuntimeError("simulated crash after epoch 1")
    train(config)


class Results(tune.Callback):
    """Every result the driver processed, in order (callbacks run in the driver's process)."""

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.iterations: list[int] = []
        self.last: dict[str, Any] = {}

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        self.epochs.append(result["epoch"])
        self.iterations.append(result["training_iteration"])
        self.last = result


def test_a_crashed_trial_resumes_from_its_checkpoint_on_a_gpu_slot(
        local_ray: None, course_demo: Path, tmp_path: Path) -> None:
    cfg = tiny_config(course_demo, epochs=3).to_dict()
    seen = Results()
    tuner = tune.Tuner(
        tune.with_resources(crash_after_first_epoch, {"cpu": 1, "gpu": 1}),
        param_space=cfg,
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="resume", verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1),
                                  callbacks=[seen]),
    )
    result = tuner.fit()[0]
    assert result.error is None
    # every epoch once, as the driver received them: the retry started at epoch 2, not from
    # scratch. (Not read from progress.csv: Ray copies a restored trial's logs to the storage
    # folder on its own schedule, and once in CI the table lacked the first attempt's row.)
    assert seen.epochs == [1, 2, 3]
    assert seen.iterations == [1, 2, 3]
    assert {"val/kappa", "val/loss", "train/loss", "lr", "train/images_per_s"} <= set(seen.last)
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as folder:
        assert (Path(folder) / "model.safetensors").is_file()


def test_a_trial_computes_with_as_many_threads_as_ray_gave_it_cpus(local_ray: None) -> None:
    """torch's threads follow the trial's CPUs (a reused process too), `threads` overrides."""
    from trainables.train.config import TrainConfig
    from trainables.train.trainable import plan_threads, trial_cpus

    @ray.remote
    def threads(settings: dict[str, Any]) -> tuple[int, int]:
        return trial_cpus(), plan_threads(TrainConfig.from_dict(settings))

    assert ray.get(threads.options(num_cpus=2).remote({})) == (2, 2)
    assert ray.get(threads.options(num_cpus=0.5).remote({})) == (1, 1)  # a fraction: one
    assert ray.get(threads.options(num_cpus=1).remote({"threads": 2})) == (1, 2)
    assert trial_cpus() == 0  # the driver: not a trial
