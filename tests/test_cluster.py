"""The cluster YAMLs pass Ray's own config validator (what `ray up` runs first)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.commands import prepare_config
from ray.autoscaler._private.util import validate_config

CLUSTER = Path(__file__).parent.parent / "cluster"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


@pytest.mark.parametrize("name", ["gpu.yaml", "local.yaml"])
def test_cluster_config_passes_rays_validator(name: str) -> None:
    config = load(name)
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["file_mounts"]["~/medtune"] == "."  # the project travels with the cluster
    assert any("pip install -e ~/medtune" in c for c in config["setup_commands"])


def test_the_validator_rejects_a_broken_config() -> None:
    config = load("gpu.yaml")
    config["available_node_types"]["gpu_worker"]["min_wokers"] = 1  # a typo
    with pytest.raises(jsonschema.ValidationError, match="min_wokers"):
        validate_config(prepare_config(copy.deepcopy(config)))


def test_gpu_cluster_has_a_cpu_head_and_gpu_workers() -> None:
    config = load("gpu.yaml")
    nodes = config["available_node_types"]
    assert nodes[config["head_node_type"]]["node_config"]["InstanceType"].startswith("m5")
    assert nodes["gpu_worker"]["node_config"]["InstanceType"].startswith(("g4dn", "g5", "p3"))
    assert any("/mnt/shared" in c for c in config["setup_commands"])  # shared run folder
