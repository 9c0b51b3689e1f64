"""Stage 1 of a two-stage transfer: keyed by its data and its own config, built once (file lock
outside Ray, a lease inside), taken over when its builder goes silent, loaded into stage 2."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from tests.stage1_helpers import stage1_cfg, write_small_aptos
from trainables.data.cache import fingerprint
from trainables.data.trial_data import resolve_data
from trainables.errors import ConfigError
from trainables.train.config import TrainConfig
from trainables.train.stage1 import (
    detect_dataset,
    stage1_config,
    stage1_key,
    stage1_weights,
    start_registry,
)
from trainables.train.trainable import fit


@pytest.fixture(scope="module")
def aptos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_aptos(tmp_path_factory.mktemp("aptos"))


def key_of(cfg) -> str:  # type: ignore[no-untyped-def]
    cfg1, index = resolve_data(stage1_config(cfg))
    return stage1_key(cfg1, fingerprint(index))


def test_the_key_ignores_what_stage_2_searches_and_follows_what_shapes_stage_1(
        aptos: Path, tmp_path: Path) -> None:
    base = stage1_cfg(aptos, tmp_path)
    same = [base.replace(lr=1e-2, augment="none", unfreeze_depth=1, seed=7, label_smoothing=0.1,
                         device="auto", cache_dir=str(tmp_path / "elsewhere"))]
    other = [base.replace(stage1_epochs=2), base.replace(stage1_lr=1e-3),
             base.replace(image_size=48), base.replace(model="resnet34")]
    assert {key_of(c) for c in same} == {key_of(base)}
    assert len({key_of(c) for c in other} | {key_of(base)}) == 5
    assert stage1_config(base).dataset == "aptos" and stage1_config(base).epochs == 1


def test_the_stage_1_reader_is_found_from_its_csv(aptos: Path, tmp_path: Path) -> None:
    assert detect_dataset(str(aptos)) == "aptos"
    (tmp_path / "trainLabels.csv").write_text("image,level\n")
    assert detect_dataset(str(tmp_path)) == "kaggle_dr"
    with pytest.raises(ConfigError, match=r"neither APTOS 2019's train\.csv nor Kaggle DR"):
        detect_dataset(str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="stage1_data and stage1_weights: give one"):
        stage1_cfg(aptos, tmp_path, stage1_weights="x.safetensors")


def test_outside_ray_stage_1_is_built_once_then_read_and_a_file_can_stand_in(
        aptos: Path, tmp_path: Path) -> None:
    cfg = stage1_cfg(aptos, tmp_path)
    weights, meta, built = stage1_weights(cfg, fit)
    assert built and meta["metric"] == "val/kappa" and meta["epoch"] == 1
    again, meta2, built2 = stage1_weights(cfg.replace(lr=1e-2), fit)  # another trial's stage 2
    assert not built2 and again == weights and meta2["key"] == meta["key"]
    path = tmp_path / "store" / meta["key"] / "model.safetensors"
    assert path.read_bytes() == weights
    given, _, built3 = stage1_weights(cfg.replace(stage1_data="", stage1_weights=str(path)), fit)
    assert given == weights and not built3
    with pytest.raises(ConfigError, match=r"stage1_weights=.*: no such file"):
        stage1_weights(cfg.replace(stage1_data="", stage1_weights=str(tmp_path / "no.pt")), fit)


def test_stage_2_starts_from_the_stage_1_weights(aptos: Path, tmp_path: Path) -> None:
    from safetensors.torch import load

    from trainables.model.models import build_model
    from trainables.train.trainable import start_from_stage1

    cfg = stage1_cfg(aptos, tmp_path, num_classes=5)
    weights, _, _ = stage1_weights(cfg, fit)
    model = build_model(cfg.replace(weights="none"))
    start_from_stage1(model, cfg)
    stage1 = load(weights)
    assert all(torch.equal(v, stage1[k]) for k, v in model.state_dict().items())
    three = build_model(cfg.replace(weights="none", num_classes=3))  # another class count
    start_from_stage1(three, cfg)  # the backbone; the head keeps its own shape
    assert torch.equal(three.backbone.conv1.weight, stage1["backbone.conv1.weight"])
    assert three.classifier.weight.shape == (3, 512)
    key = key_of(cfg)
    other = cfg.replace(model="resnet34", stage1_data="",
                        stage1_weights=str(tmp_path / "store" / key / "model.safetensors"))
    with pytest.raises(ConfigError, match="do not fit resnet34: 96 backbone tensors"):
        start_from_stage1(build_model(other.replace(weights="none")), other)


def test_a_killed_builders_lease_lapses_and_a_live_builder_keeps_its_own(
        aptos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Builders as Ray tasks, as trials are: one SIGKILLed half-way (its heartbeat stops with
    it, so its lease lapses and the next caller builds), one alive past its lease (it beats,
    so the next caller waits and takes its weights)."""
    import os
    import signal

    import ray

    lease = 1.5
    monkeypatch.setenv("MEDTUNE_STAGE1_LEASE", str(lease))  # the workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        registry = start_registry()

        @ray.remote(num_cpus=1, max_retries=0)
        def build(cfg: TrainConfig) -> tuple[bytes, bool]:
            weights, _, built = stage1_weights(cfg, fit)
            return weights, built

        def holder_of(key: str) -> str:  # the builder's node:pid:thread, once it has claimed
            deadline = time.monotonic() + 120
            while not (owner := ray.get(registry.holder.remote(key))):
                assert time.monotonic() < deadline, "no builder claimed the lease"
                time.sleep(0.05)
            return owner

        killed = stage1_cfg(aptos, tmp_path, stage1_epochs=3)
        doomed = build.remote(killed)
        os.kill(int(holder_of(key_of(killed)).split(":")[1]), signal.SIGKILL)
        killed_at = time.monotonic()
        with pytest.raises(ray.exceptions.RayError):  # really dead, before it finished
            ray.get(doomed)
        _, _, built = stage1_weights(killed, fit)
        assert built and time.monotonic() - killed_at >= lease * 3 / 4  # its last beat, lapsed

        alive = stage1_cfg(aptos, tmp_path, stage1_epochs=10)  # builds for longer than a lease
        running = build.remote(alive)
        holder_of(key_of(alive))
        claimed = time.monotonic()
        weights, _, built_here = stage1_weights(alive, fit)
        waited = time.monotonic() - claimed
        theirs, built_there = ray.get(running)
        assert built_there and not built_here and weights == theirs
        assert waited > 2 * lease  # it held the lease past its length by beating
    finally:
        ray.shutdown()

