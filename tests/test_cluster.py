"""The cluster YAMLs pass Ray's own config validator (what `ray up` runs first); a driver
meets a cluster that is gone with one line, not a wait."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.commands import prepare_config
from ray.autoscaler._private.util import validate_config

from search.engine.driver import _check_reachable, answers
from tests.helpers import free_port
from trainables.errors import ConfigError

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
    # spot GPUs beside the on-demand ones, started only when needed; every type named for the
    # cost ledger, and the workers of both types within the cluster's max_workers
    spot = nodes["gpu_spot"]
    assert spot["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
    assert spot["min_workers"] == 0 and spot["resources"] == nodes["gpu_worker"]["resources"]
    assert all(n["labels"] == {"medtune-node-type": name} for name, n in nodes.items())
    assert spot["max_workers"] + nodes["gpu_worker"]["max_workers"] <= config["max_workers"]


def test_a_head_that_no_longer_answers_is_passed_over_or_named(tmp_path: Path) -> None:
    """A head recorded by `ray start` and gone since (killed, no `ray stop`): ray.init() would
    wait about 13 minutes on it in silence. The driver says so and starts a Ray of its own; a
    RAY_ADDRESS where nothing answers is one clear line, before any wait."""
    short = Path(tempfile.mkdtemp(prefix="mt", dir="/tmp"))  # Ray's socket paths stay short
    try:
        (short / "ray").mkdir()
        gone = f"127.0.0.1:{free_port()}"
        (short / "ray" / "ray_current_cluster").write_text(gone)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        code = ("import ray; from search.cli import setup_logging; from search.engine.driver import "
                "connect_ray; setup_logging(); connect_ray(env={}); "
                "print('joined', ray.get_runtime_context().gcs_address)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**env, "RAY_TMPDIR": str(short)}, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"the Ray head recorded in {short}/ray/ray_current_cluster ({gone}) does not " \
               "answer" in done.stderr
        joined = done.stdout.split("joined ")[1].strip()
        assert joined and joined != gone  # a Ray of its own
    finally:
        shutil.rmtree(short, ignore_errors=True)

    for address in (gone, f"ray://{gone}"):
        with pytest.raises(ConfigError, match=f"cannot join the Ray cluster at RAY_ADDRESS="
                           f"{address}: nothing answers there"):
            _check_reachable(address)
    with socket.create_server(("127.0.0.1", 0)) as server:  # something listens: left to Ray
        listening = f"127.0.0.1:{server.getsockname()[1]}"
        assert _check_reachable(listening) == listening and answers(listening)
    assert _check_reachable("local") == "local"
