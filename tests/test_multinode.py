"""Several Ray nodes on one machine (`ray.cluster_utils.Cluster`, logical GPUs): the search's
trials spread over the GPU nodes, and a trial whose node is lost resumes on another node from
its last checkpoint, as on a cluster started with `ray up cluster/gpu.yaml`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray
from ray import tune
from ray.cluster_utils import Cluster

from search.driver import SearchPlan, check_resources, default_concurrency, new_tuner
from search.run_folder import write_tables
from search.storage import RunStore
from spaces import get_experiment

EPOCHS = 6


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, list[Any]]]:
    """A head without CPUs or GPUs (it only drives, like gpu.yaml's head) and two GPU nodes."""
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0})
    workers = [nodes.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, log_to_driver=False)
    yield nodes, workers
    ray.shutdown()
    nodes.shutdown()


class Heard(tune.Callback):
    """What the driver hears, as it hears it: each result's (trial id, epoch, node id), and
    each trial's number of checkpoints it has taken in (what a retry resumes from)."""

    def __init__(self) -> None:
        self.results: list[tuple[str, int, str]] = []
        self.checkpoints: dict[str, int] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self.results.append((trial.trial_id, int(result["epoch"]), result["node_id"]))

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        self.checkpoints[trial.trial_id] = self.checkpoints.get(trial.trial_id, 0) + 1

    def mid_trial(self) -> tuple[str, str] | None:
        """(trial id, node id) of a trial with a checkpoint taken in, not yet at its end."""
        last = {trial: (epoch, node) for trial, epoch, node in self.results}
        for trial, (epoch, node) in last.items():
            if self.checkpoints.get(trial) and epoch < EPOCHS:
                return trial, node
        return None


@pytest.mark.slow
def test_trials_spread_over_nodes_and_a_lost_nodes_trial_resumes_on_another(
        cluster: tuple[Cluster, list[Any]], course_demo: Path, tmp_path: Path) -> None:
    nodes, workers = cluster
    experiment = get_experiment("deepdrid_finetune")
    pinned = {"batch_size": 8}
    config = experiment.config(demo=False, overrides={
        "data": str(course_demo), "model": "resnet18", "weights": "none", "image_size": 64,
        "max_train_batches": 4, "max_eval_batches": 2, "device": "cpu", "epochs": EPOCHS,
        "seed": 0, **pinned}).to_dict()
    fixed = {k: v for k, v in config.items() if k not in experiment.searched or k in pinned}
    check_resources(1, 1)  # one GPU per trial: the cluster has it, on two nodes
    plan = SearchPlan(experiment=experiment, store=RunStore(tmp_path / "deepdrid_finetune" / "nodes"),
                      fixed=fixed, pinned=pinned, num_samples=3, max_epochs=EPOCHS, seed=0,
                      cpus_per_trial=1, gpus_per_trial=1,
                      max_concurrent=default_concurrency(1, 1), wandb=False)
    assert plan.max_concurrent == 2  # what the two GPU nodes fit
    plan.run_dir.mkdir(parents=True)
    heard = Heard()
    # ASHA's grace period at the full length: no trial is stopped early, all run to the end
    tuner = new_tuner(plan, [heard], startup_trials=3, grace_period=EPOCHS, reduction_factor=2)
    outcome: dict[str, Any] = {}
    search = threading.Thread(target=lambda: outcome.update(results=tuner.fit()))
    search.start()

    deadline = time.monotonic() + 300
    while (found := heard.mid_trial()) is None:
        assert time.monotonic() < deadline and search.is_alive(), "no trial checkpointed"
        time.sleep(0.05)
    victim, lost = found
    nodes.remove_node(next(w for w in workers if w.node_id == lost))  # its trial dies with it
    nodes.add_node(num_cpus=1, num_gpus=1)  # a replacement, as the autoscaler would start
    search.join(timeout=600)
    assert not search.is_alive()

    trials = write_tables(plan, outcome["results"])
    epochs = pd.read_parquet(plan.run_dir / "epochs.parquet")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}, trials[["status", "error"]]
    head = nodes.head_node.node_id
    assert head not in set(epochs["node_id"])  # no GPU there: no trial ran on it
    assert epochs["node_id"].nunique() >= 2  # the trials spread over the GPU nodes
    # the victim resumed from its checkpoint: every epoch once; the first on the lost node, the
    # last on another one
    moved = epochs[epochs["trial_id"] == victim].sort_values("epoch")
    assert moved["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert moved["node_id"].iloc[0] == lost and moved["node_id"].iloc[-1] != lost
    assert trials.set_index("trial_id").loc[victim, "node_id"] != lost
