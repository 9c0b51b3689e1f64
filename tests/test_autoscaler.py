"""Real autoscaling on one machine, as `ray up cluster/gpu.yaml` does it in the cloud: Ray's
`fake_multinode` provider starts and stops Ray nodes as processes here where AWS would start
instances. The head has one CPU and no GPU; a `gpu_worker` type (1 CPU, 1 logical GPU) scales
from 0 to 2. The README's search (`--gpus-per-trial 0.5`, run on the head) is accepted, makes
the autoscaler start GPU workers, and runs its trials and final members there; a request no
node type can hold fails at once. Slow: starting nodes costs seconds each.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
import ray
from ray.cluster_utils import AutoscalingCluster

from search.engine.driver import autoscaler_running, recorded_head
from tests.helpers import free_port

# The fake_multinode provider's base config. Ray's AutoscalingCluster reads it from
# ray/autoscaler/_private/fake_multi_node/example.yaml, which the pip wheel leaves out.
BASE_CONFIG: dict[str, Any] = {
    "cluster_name": "medtune-fake", "max_workers": 2, "upscaling_speed": 1.0,
    "idle_timeout_minutes": 0.5, "head_node_type": "ray.head.default",
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                 "disable_node_updaters": True, "disable_launch_config_check": True},
    "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
    "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
    "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
}
HEAD = {"CPU": 1}  # like gpu.yaml's head: CPUs only
GPU_WORKER = {"resources": {"CPU": 1, "GPU": 1, "object_store_memory": 200 * 1024**2},
              "node_config": {}, "min_workers": 0, "max_workers": 2}
TINY = ["--set", "model=resnet18", "--set", "weights=none", "--set", "image_size=64",
        "--set", "max_train_batches=2", "--set", "max_eval_batches=2", "--set", "device=cpu",
        "--set", "batch_size=8", "--no-wandb"]


class OneMachineCluster(AutoscalingCluster):
    """AutoscalingCluster with the base config given here instead of read from the wheel, on a
    port of its own, started and stopped without `ray stop --force` (which stops every Ray on
    the machine, those of test modules running beside this one too)."""

    def __init__(self, **kwargs: Any) -> None:
        self.address = f"{ray.util.get_node_ip_address()}:{free_port()}"
        super().__init__(**kwargs)

    def _generate_config(self, head_resources: dict, worker_node_types: dict,
                         autoscaler_v2: bool = False, **config_kwargs: Any) -> dict:
        config = json.loads(json.dumps(BASE_CONFIG))
        config["provider"]["gcs_address"] = self.address  # its worker nodes join this head
        config["available_node_types"] = {
            **worker_node_types,
            "ray.head.default": {"resources": dict(head_resources), "node_config": {},
                                 "max_workers": 0}}
        config.update(config_kwargs)
        return config

    def start(self, _system_config: dict | None = None, override_env: dict | None = None) -> None:
        config = Path(tempfile.mkdtemp()) / "autoscaling.json"
        config.write_text(json.dumps(self._config))
        cpus = self._head_resources.get("CPU", 0)
        subprocess.check_call(
            ["ray", "start", "--head", f"--port={self.address.rsplit(':', 1)[1]}",
             f"--num-cpus={cpus}", "--num-gpus=0", "--include-dashboard=false",
             f"--autoscaling-config={config}"],
            env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
                 "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1"},
            stdout=subprocess.DEVNULL)

    def shutdown(self) -> None:
        """Kill this cluster's processes: every one started with its GCS address or port (the
        GCS, the head's and the worker nodes' raylets, the monitor, the agents), with their
        children (the Ray workers, which rename themselves)."""
        port = self.address.rsplit(":", 1)[1]
        ours = []
        for proc in psutil.process_iter(["cmdline"]):
            line = " ".join(proc.info["cmdline"] or ())
            if self.address in line or f"--gcs_server_port={port}" in line:
                with contextlib.suppress(psutil.NoSuchProcess):
                    ours += [proc, *proc.children(recursive=True)]
        for proc in ours:  # as `ray stop --force` does: SIGKILL
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(ours, timeout=10)
        record, head = recorded_head()  # `ray start` recorded it for ray.init(): `ray stop` clears
        if head == self.address:
            record.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def head_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cluster, and a home folder holding its config where `ray up` puts it on a head node
    (~/ray_bootstrap_config.yaml); the search runs with HOME there, as on the head."""
    home = tmp_path_factory.mktemp("head-home")
    cluster = OneMachineCluster(head_resources=dict(HEAD),
                                worker_node_types={"gpu_worker": GPU_WORKER})
    (home / "ray_bootstrap_config.yaml").write_text(json.dumps(cluster._config))
    cluster.start()
    before = os.environ["RAY_ADDRESS"]  # conftest's "local"; the search on the head reads it
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        ray.init(log_to_driver=False)
        deadline = time.monotonic() + 60
        while not autoscaler_running():  # its first report comes a few seconds after start
            assert time.monotonic() < deadline, "the autoscaler never reported"
            time.sleep(0.5)
        yield home
    finally:
        os.environ["RAY_ADDRESS"] = before
        ray.shutdown()
        cluster.shutdown()


def search(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # the token `ray start` wrote for this cluster (Ray 2.60 authenticates every driver)
    token = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path("~/.ray/auth_token").expanduser())
    # on the head, with the cluster's address (ray.init() alone would join the Ray that this
    # machine started last, which may be another test module's)
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_TOKEN_PATH": token}
    return subprocess.run([sys.executable, "-m", "search.run", *args], env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_an_impossible_per_node_request_fails_at_once(head_home: Path, course_demo: Path,
                                                      tmp_path: Path) -> None:
    started = time.monotonic()
    result = search(head_home, "deepdrid_finetune", "--data", str(course_demo), "--results",
                    str(tmp_path), "--name", "two", "--gpus-per-trial", "2", *TINY)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    error = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and "asks for 1 CPU and 2 GPU on one node, but no node can hold" in \
        error[0] and "node type gpu_worker x2 (1 CPU, 1 GPU)" in error[0], result.stderr
    assert time.monotonic() - started < 60  # at once: no waiting for the autoscaler
    assert not (tmp_path / "deepdrid_finetune" / "two").exists()


@pytest.mark.slow
def test_the_readmes_gpu_search_starts_gpu_workers_and_runs_there(
        head_home: Path, course_demo: Path, tmp_path: Path) -> None:
    assert ray.cluster_resources().get("GPU", 0) == 0  # no GPU anywhere yet
    result = search(head_home, "deepdrid_finetune", "--data", str(course_demo), "--results",
                    str(tmp_path), "--name", "auto", "--num-samples", "2", "--max-epochs", "2",
                    "--gpus-per-trial", "0.5", "--no-baseline", *TINY)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "autoscaler node types (" in out and "node type gpu_worker x2 (1 CPU, 1 GPU)" in out
    assert "2 at a time (1 CPU, 0.5 GPU each)" in out  # one trial per 1-CPU worker, two workers
    assert "pending (1 CPU + 0.5 GPU each): no live node can hold one, waiting for the " \
        "autoscaler to start a node" in out
    run = tmp_path / "deepdrid_finetune" / "auto"
    trials = pd.read_parquet(run / "trials.parquet")
    assert len(trials) == 2 and set(trials["status"]) <= {"completed", "stopped early"}
    head = next(n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"])
    ran_on = set(pd.read_parquet(run / "epochs.parquet")["node_id"])
    assert ran_on and head not in ran_on  # every epoch on an autoscaled GPU worker
    members = json.loads((run / "final" / "metrics.json").read_text())["members"]
    assert len(members) == 2 and head not in {m["node_id"] for m in members}
    assert len(pd.read_csv(run / "submission" / "test_predictions.csv")) == 8
