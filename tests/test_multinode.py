"""Several Ray nodes on one machine (`ray.cluster_utils.Cluster`, logical GPUs), as on a cluster
started with `ray up cluster/gpu.yaml`: a head without CPUs or GPUs that only drives, and two
GPU nodes. The search's trials spread over the GPU nodes and a trial whose node is lost resumes
on another node from its last checkpoint; the final step's members run on the GPU nodes too,
and a member whose node is lost is trained again elsewhere, the submission complete."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray
from ray import tune
from ray.cluster_utils import Cluster

from search.engine.driver import SearchPlan, check_resources, new_tuner
from search.engine.run_folder import write_tables
from search.engine.search import plan_search, write_config_json
from search.engine.storage import RunStore
from search.run import parse_args, resolve
from spaces import get_experiment
from trainables.errors import ConfigError
from trainables.train.trainable import fit

EPOCHS = 6
GPU_NODE = {"num_cpus": 1, "num_gpus": 1}


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, list[Any]]]:
    """A head without CPUs or GPUs (it only drives, like gpu.yaml's head) and two GPU nodes."""
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0})
    workers = [nodes.add_node(**GPU_NODE) for _ in range(2)]
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


def lose_node_when(found: Callable[[], str | None], nodes: Cluster, busy: threading.Thread,
                   ) -> str:
    """Wait until `found()` names a node (its id, or the short id the console shows), then
    remove that node and add a replacement GPU node (as the autoscaler would); returns the
    lost node's id."""
    deadline = time.monotonic() + 300
    while (node_id := found()) is None:
        assert time.monotonic() < deadline and busy.is_alive(), "nothing ran to be interrupted"
        time.sleep(0.05)
    lost = next(n for n in nodes.list_all_nodes() if n.node_id.startswith(node_id))
    nodes.remove_node(lost)  # what runs there dies with it
    nodes.add_node(**GPU_NODE)
    return lost.node_id


@pytest.fixture(scope="module")
def searched(cluster: tuple[Cluster, list[Any]], course_demo: Path,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A search of 3 trials, one GPU each, during which the node of a running trial is lost."""
    nodes, _ = cluster
    experiment = get_experiment("deepdrid_finetune")
    args = parse_args(["deepdrid_finetune", "--data", str(course_demo), "--num-samples", "3",
                       "--max-epochs", str(EPOCHS), "--cpus-per-trial", "1",
                       "--gpus-per-trial", "1", "--no-wandb", "--set", "model=resnet18",
                       "--set", "weights=none", "--set", "image_size=64", "--set",
                       "max_train_batches=4", "--set", "max_eval_batches=2", "--set",
                       "device=cpu", "--set", "batch_size=8"])
    spec = resolve(args, experiment)
    store = RunStore(tmp_path_factory.mktemp("results") / "deepdrid_finetune" / "nodes")
    shape = check_resources(1, 1)  # one GPU per trial: the cluster has it, on two nodes
    plan: SearchPlan = plan_search(experiment, store, spec, shape)
    assert plan.max_concurrent == 2  # what the two GPU nodes fit (the head holds none)
    write_config_json(plan, spec, ["test"])
    heard = Heard()
    # ASHA's grace period at the full length: no trial is stopped early, all run to the end
    tuner = new_tuner(plan, [heard], startup_trials=3, grace_period=EPOCHS, reduction_factor=2)
    outcome: dict[str, Any] = {}
    search = threading.Thread(target=lambda: outcome.update(results=tuner.fit()))
    search.start()
    victim: list[str] = []

    def running_trial_node() -> str | None:
        found = heard.mid_trial()
        if found:
            victim.append(found[0])
        return found[1] if found else None

    lost = lose_node_when(running_trial_node, nodes, search)
    search.join(timeout=600)
    assert not search.is_alive()
    return {"plan": plan, "results": outcome["results"], "victim": victim[-1], "lost": lost,
            "head": nodes.head_node.node_id, "heard": heard.results}


def build_stage1(config: dict[str, Any]) -> None:
    """A trial that only gets its stage-1 model: which node, whether it built it, its digest."""
    import hashlib

    from trainables.train.config import TrainConfig
    from trainables.train.stage1 import stage1_weights

    weights, _, built = stage1_weights(TrainConfig.from_dict(config), fit)
    tune.report({"built": int(built), "digest": hashlib.sha256(weights).hexdigest(),
                 "node_id": ray.get_runtime_context().get_node_id()})


@pytest.mark.slow
def test_two_trials_starting_together_on_two_nodes_train_stage_1_once(
        cluster: tuple[Cluster, list[Any]], tmp_path: Path) -> None:
    from tests.stage1_helpers import stage1_cfg, write_small_aptos

    aptos = write_small_aptos(tmp_path / "aptos")
    cfg = stage1_cfg(aptos, tmp_path, stage1_epochs=2).to_dict()
    tuner = tune.Tuner(
        tune.with_resources(build_stage1, {"cpu": 1}),
        param_space={**cfg, "seed": tune.grid_search([1, 2])},  # two trials of stage 2
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="stage1",
                                  verbose=0))
    results = [r.metrics for r in tuner.fit()]
    assert sorted(r["built"] for r in results) == [0, 1]  # one built it, the other waited
    assert len({r["node_id"] for r in results}) == 2  # on two nodes, at the same time
    assert len({r["digest"] for r in results}) == 1
    assert len(list((tmp_path / "store").iterdir())) == 1


@pytest.mark.slow
def test_two_gpus_per_trial_on_one_gpu_nodes_is_refused_at_once(
        cluster: tuple[Cluster, list[Any]]) -> None:
    assert ray.cluster_resources()["GPU"] >= 2  # two GPUs in the cluster, one per node
    with pytest.raises(ConfigError, match="asks for 1 CPU and 2 GPU on one node, but no node "
                                          "can hold that"):
        check_resources(1, 2)


@pytest.mark.slow
def test_trials_spread_over_nodes_and_a_lost_nodes_trial_resumes_on_another(
        searched: dict[str, Any]) -> None:
    plan, victim, lost = searched["plan"], searched["victim"], searched["lost"]
    trials = write_tables(plan, searched["results"])
    epochs = pd.read_parquet(plan.run_dir / "epochs.parquet")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}, trials[["status", "error"]]
    assert searched["head"] not in set(epochs["node_id"])  # no GPU there: no trial ran on it
    assert epochs["node_id"].nunique() >= 2  # the trials spread over the GPU nodes
    # the victim resumed from its checkpoint: each epoch once, the last on another node than
    # the lost one (Ray may restore a restarted trial's result.json from a storage copy that
    # lags, under load: an early epoch can be missing from the table, as in the phase-b test)
    moved = epochs[epochs["trial_id"] == victim].sort_values("epoch")
    assert moved["epoch"].is_unique and moved["epoch"].max() == EPOCHS, moved
    assert moved["node_id"].iloc[-1] != lost
    # what the driver heard, raw (the table keeps one row per epoch): the first epoch on the
    # lost node; the victim went on from its checkpoint, not from scratch; at most the epoch in
    # flight when the node died was trained again, on another node
    heard = [(epoch, node) for trial, epoch, node in searched["heard"] if trial == victim]
    assert heard[0] == (1, lost)
    numbers = [epoch for epoch, _ in heard]
    assert sorted(set(numbers)) == list(range(1, EPOCHS + 1)) and numbers.count(1) == 1
    assert len(numbers) - len(set(numbers)) <= 1, numbers
    assert heard[0][1] == lost and heard[-1][1] != lost
    assert trials.set_index("trial_id").loc[victim, "node_id"] != lost


@pytest.mark.slow
def test_final_members_train_on_the_gpu_nodes_and_survive_a_lost_node(
        searched: dict[str, Any], cluster: tuple[Cluster, list[Any]], course_demo: Path) -> None:
    from search.final import run_final

    nodes, _ = cluster
    plan = searched["plan"]
    write_tables(plan, searched["results"])  # best/top_k.json, as search.run writes it
    lines: list[str] = []
    summary: dict[str, Any] = {}
    final = threading.Thread(target=lambda: summary.update(
        run_final(plan.run_dir, top_k=2, baseline=False, echo=lines.append)))
    final.start()

    def member_mid_training() -> str | None:
        """The node of member 1 once it has reported an epoch."""
        started = [ln for ln in lines if ln.startswith("member 1: started on node ")]
        if started and any(ln.startswith("member 1: epoch 2/") for ln in lines):
            return started[-1].split("started on node ")[1].split()[0]
        return None

    lost = lose_node_when(member_mid_training, nodes, final)
    final.join(timeout=900)
    assert not final.is_alive() and summary, "\n".join(lines)
    assert [m["member"] for m in summary["members"]] == [1, 2] and not summary["failed"]
    ran_on = {m["member"]: m["node_id"] for m in summary["members"]}
    assert searched["head"] not in ran_on.values()  # the CPU-less head drove, never trained
    assert ran_on[1] != lost  # member 1 was trained again on a node that lives
    assert sum(ln.startswith("member 1: started on node ") for ln in lines) == 2, lines
    assert all(m["device"] == "cpu" for m in summary["members"])  # logical GPUs: no CUDA here
    submission = pd.read_csv(plan.run_dir / "submission" / "test_predictions.csv")
    assert len(submission) == len(pd.read_csv(course_demo / "test.csv"))
    for member in (1, 2):
        folder = plan.run_dir / "final" / f"member_{member}"
        assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "model.safetensors"]
    page = (plan.run_dir / "report" / "index.html").read_text()
    assert ran_on[1][:8] in page and "trained on (device, Ray node)" in page  # ids short there
