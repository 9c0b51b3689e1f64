"""The sections of `python -m search.bench` that run whole searches (`search.run`, in-process):

  overhead    tiny trials through medtune's search (Optuna study, scheduler, callbacks,
              checkpoints; W&B offline or off) against the same configs as plain calls of the
              trainable: the seconds a search adds per trial once it runs, and to start
  efficiency  random search with full-length trials against TPE alone, ASHA alone and
              TPE + ASHA on the experiment's demo, over seeds (search/bench/efficiency.py)
  scale       one fixed random search on a `ray.cluster_utils` cluster with one, then two
              one-CPU worker nodes (the head has no CPU): trials per minute

Each measurement runs in its own process (see search/bench/process.py).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from search.bench.efficiency import (
    ARMS,
    BASELINE,
    COMPARISONS,
    anytime_figure,
    arm_seed,
    comparison_rows,
)

RUNS_SUFFIX = "-runs.json"  # beside a record: the runs its figure is drawn from (not a record)
TINY = {"model": "resnet18", "weights": "none", "image_size": 64, "batch_size": 8,
        "max_train_batches": 2, "max_eval_batches": 1, "device": "cpu"}


def _sets(values: dict[str, Any]) -> list[str]:
    return [arg for k, v in values.items() for arg in ("--set", f"{k}={v}")]


def _search(argv: list[str]) -> float:
    """Run `python -m search.run ARGV` in this process; its wall seconds."""
    from search.run import main

    started = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"search.run {' '.join(argv)} ended with code {code}")
    return seconds


def _trial_configs(run_dir: Path) -> list[dict[str, Any]]:
    """The configs Ray Tune ran, in the order the trials started."""
    folders = sorted((run_dir / "tune").glob("trial_*/params.json"), key=lambda f: f.stat().st_mtime)
    return [json.loads(f.read_text()) for f in folders]


# ---- overhead

def _fixed_search(p: dict[str, Any], results: str, name: str, trials: int, *extra: str,
                  **sets: Any) -> list[str]:
    """`search.run` arguments of a random search of one-CPU, 2-epoch trials of the TINY
    config (`sets` change it) on the bench's data, every trial run whole."""
    return [p["experiment"], "--data", p["data"], "--results", results, "--name", name,
            "--num-samples", str(trials), "--max-epochs", "2", "--cpus-per-trial", "1",
            "--sampler", "random", "--scheduler", "fifo", "--no-final",
            *(() if p.get("wandb") else ("--no-wandb",)), *extra,
            *_sets({**TINY, "preprocess": p["preprocess"], **sets})]


def _tiny_search(p: dict[str, Any], results: str, name: str, trials: int) -> list[str]:
    return _fixed_search(p, results, name, trials, "--max-concurrent", "1")


def measure_overhead_search(p: dict[str, Any]) -> dict[str, Any]:
    """Three searches on one local Ray: one trial (it starts Ray), one trial again (a search's
    start on a running Ray), then `trials` trials; then the last search's configs as plain
    calls, with the one thread a one-CPU trial gets."""
    import torch

    from search.bench.process import quiet_search_env
    from trainables.train.config import TrainConfig
    from trainables.train.reporting import LocalReporter
    from trainables.train.trainable import fit

    quiet_search_env(wandb=bool(p.get("wandb")))
    torch.set_num_threads(1)
    fit(TrainConfig.from_dict({**_tiny_config(p), "seed": 99}), LocalReporter(None))  # cache, imports
    n = p["trials"]
    with tempfile.TemporaryDirectory() as results:
        with_ray_start = _search(_tiny_search(p, results, "start", 1))
        one = _search(_tiny_search(p, results, "one", 1))
        many = _search(_tiny_search(p, results, "many", n))
        configs = _trial_configs(Path(results) / p["experiment"] / "many")
    import ray

    ray.shutdown()
    started = time.perf_counter()
    for config in configs:
        fit(TrainConfig.from_dict(config), LocalReporter(None))
    plain = time.perf_counter() - started
    return {"trials": n, "ray_start_seconds": with_ray_start - one, "one_trial_seconds": one,
            "seconds": many, "plain_seconds": plain}


def _tiny_config(p: dict[str, Any]) -> dict[str, Any]:
    from search.bench.process import data_keys

    return {**data_keys(p), **TINY, "epochs": 2}


def bench_overhead(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    from search.bench.process import measure
    from search.bench.rows import row, value_row

    rows: list[dict[str, Any]] = []
    for wandb in (True,) if params.get("quick") else (False, True):  # quick: the plumbing once
        runs = []
        for i in range(repeats):
            runs.append(measure("overhead-search", {**params, "wandb": wandb}))
            echo(f"  overhead-search (W&B {'offline' if wandb else 'off'}): run {i + 1} of {repeats}")
        n = params["trials"]
        plain = statistics.median(r["plain_seconds"] / n for r in runs)
        # the search's time per trial once it runs: (n trials - 1 trial) / (n - 1)
        steady = statistics.median((r["seconds"] - r["one_trial_seconds"]) / (n - 1) for r in runs)
        label = "W&B offline" if wandb else "no W&B"
        rows += [
            row("overhead", f"s per tiny trial in a search ({label}) vs plain", steady, plain,
                False),
            value_row("overhead", f"s a search adds per trial ({label})", steady - plain,
                      at_most=1.5),
            value_row("overhead", f"s to start a search on a running Ray ({label})",
                      statistics.median(r["one_trial_seconds"] - r["plain_seconds"] / n
                                        for r in runs)),
        ]
    rows.append(value_row("overhead", "s to start a local Ray (once)",
                          statistics.median(r["ray_start_seconds"] for r in runs)))
    return rows


# ---- efficiency

def _demo_search(p: dict[str, Any], results: str, name: str, arm: str, seed: int) -> list[str]:
    sampler, scheduler = arm.split("-")
    quick = ["--smoke-test", "--num-samples", "1"] if p.get("quick") else []  # the plumbing
    return [p["experiment"], "--demo", "--results", results, "--name", name,
            "--seed", str(arm_seed(arm, seed)), "--sampler", sampler, "--scheduler", scheduler,
            "--no-final", "--no-wandb", *[a for s in p.get("sets") or () for a in ("--set", s)],
            *quick]


def measure_efficiency(p: dict[str, Any]) -> dict[str, Any]:
    """One seed's demo searches, an arm after another on one local Ray (each arm's minutes
    count from its own first trial's start, so Ray's start is in none of them); each arm's
    epochs in the order they finished, each with its value and minutes, and the search's wall
    seconds (the first arm's include Ray's start; no row reads them)."""
    from search.bench.process import quiet_search_env
    from spaces import get_experiment

    quiet_search_env(wandb=False)
    metric = get_experiment(p["experiment"]).metric
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as results:
        for arm in p["arms"]:
            name = f"{arm}-{p['seed']}"
            seconds = _search(_demo_search(p, results, name, arm, p["seed"]))
            run_dir = Path(results) / p["experiment"] / name
            epochs = pd.read_parquet(run_dir / "epochs.parquet").sort_values("timestamp",
                                                                              kind="stable")
            trials = pd.read_parquet(run_dir / "trials.parquet")
            start = float(trials["started"].min())
            runs[arm] = {"seconds": seconds, "values": [float(v) for v in epochs[metric]],
                         "minutes": [(float(t) - start) / 60 for t in epochs["timestamp"]],
                         "trials": len(trials)}
    return {"runs": runs}


def bench_efficiency(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    """Every arm (search.bench.efficiency.ARMS) over `seeds` seeds of real demo searches, seeds
    outermost so that drift on the machine hits every arm alike."""
    from search.bench.process import measure
    from spaces import get_experiment

    experiment = get_experiment(params["experiment"])
    seeds = params["seeds"]
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for seed in range(seeds):
        done = measure("efficiency", {**params, "arms": list(ARMS), "seed": seed})["runs"]
        for arm in ARMS:
            runs[arm].append(done[arm])
        echo(f"  efficiency: seed {seed + 1} of {seeds}, every arm")
    return efficiency_record(params, "efficiency", runs, experiment.mode, experiment.metric,
                             clock="minutes", title=f"{experiment.name} demo, real training")


def efficiency_record(params: dict[str, Any], section: str,
                      runs: dict[str, list[dict[str, Any]]], mode: str, metric: str, *,
                      clock: str, title: str, label: str = "",
                      best: float | None = None) -> list[dict[str, Any]]:
    """The comparisons' rows, and beside the record the anytime figure and the runs."""
    from search.bench.rows import interval_row

    rows = comparison_rows(section, runs, mode, metric, clock=clock, label=label, best=best)
    prefix = f"{label}: " if label else ""
    for arm, name in COMPARISONS.items():  # what each method spends in all
        rows.append(interval_row(section, f"{prefix}{name}: epochs in the whole search",
                                 ([len(r["values"]) for r in runs[arm]],
                                  [len(r["values"]) for r in runs[BASELINE]]), arm=arm))
    folder = Path(params.get("figures") or "results/bench")
    stem = f"{section}-{label or params['experiment']}"
    figure = anytime_figure(runs, mode, metric, folder / f"{stem}.png", title=title, clock=clock)
    (folder / f"{stem}{RUNS_SUFFIX}").write_text(json.dumps({"metric": metric, "mode": mode,
                                                         "clock": clock, "runs": runs}))
    for r in rows:
        r["figure"] = figure.name
    return rows


# ---- scale

def measure_scale(p: dict[str, Any]) -> dict[str, Any]:
    """A head without CPUs and `nodes` one-CPU workers; a fixed random search of full-length
    trials through RAY_ADDRESS, as on a cluster; trials per minute."""
    import ray
    from ray.cluster_utils import Cluster

    from search.bench.process import quiet_search_env

    quiet_search_env(wandb=False)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(p["nodes"]):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    before = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        with tempfile.TemporaryDirectory() as results:
            seconds = _search(_fixed_search(p, results, "scale", p["scale_trials"],
                                            image_size=96, max_train_batches=p["scale_batches"]))
            trials = pd.read_parquet(Path(results) / p["experiment"] / "scale" / "trials.parquet")
            nodes = int(trials["node_id"].nunique())
            # while trials ran: from the first trial's start to the last one's end (whole
            # seconds), without the search's start (the trial processes' imports, the data check)
            running = float(trials["finished"].max() - trials["started"].min())
    finally:
        ray.shutdown()
        cluster.shutdown()
        if before is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = before
    return {"trials": p["scale_trials"], "seconds": seconds, "running_seconds": running,
            "nodes_used": nodes}


def bench_scale(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    from search.bench.process import data_keys, measure
    from search.bench.rows import row
    from trainables.data.trial_data import load_data, resolve_data

    # the cache at 96 px, built once before the clocks start
    from trainables.train.config import TrainConfig

    load_data(resolve_data(TrainConfig.from_dict({**data_keys(params), **TINY,
                                                  "image_size": 96}))[0])
    one, two = [], []
    for i in range(repeats):
        one.append(measure("scale", {**params, "nodes": 1}))
        two.append(measure("scale", {**params, "nodes": 2}))
        echo(f"  scale 1 node / 2 nodes: run {i + 1} of {repeats}")
    per_min = ([60 * r["trials"] / r["seconds"] for r in two],
               [60 * r["trials"] / r["seconds"] for r in one])
    scaled = row("scale", "trials per minute, 2 worker nodes vs 1",
                 statistics.median(per_min[0]), statistics.median(per_min[1]), True, target=1.8)
    scaled["nodes_used"] = [r["nodes_used"] for r in two]
    running = row("scale", "trials per minute while trials run, 2 nodes vs 1",
                  statistics.median(60 * r["trials"] / r["running_seconds"] for r in two),
                  statistics.median(60 * r["trials"] / r["running_seconds"] for r in one), True)
    return [scaled, running]
