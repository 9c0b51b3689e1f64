"""One search from start to run folder: data checked, Ray joined, Tuner run, tables written."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from search.driver import (
    SearchPlan,
    check_resources,
    connect_ray,
    default_concurrency,
    mark_stale_trials_failed,
    new_tuner,
    restored_tuner,
)
from search.environment import describe
from search.progress import Progress
from search.run_folder import write_tables
from search.storage import RunStore
from spaces.base import Experiment
from trainables.config import TrainConfig
from trainables.demo import ensure_demo
from trainables.errors import ConfigError

log = logging.getLogger(__name__)


def wandb_setup(enabled: bool, run_dir: Path, group: str) -> tuple[list[Any], dict[str, str], str]:
    """(callbacks, environment for every worker, a line saying what W&B will do)."""
    if not enabled:
        return [], {}, "W&B: off (--no-wandb)"
    try:
        import wandb  # noqa: F401
        from ray.air.integrations.wandb import WandbLoggerCallback
    except ImportError:
        return [], {}, "W&B: off (wandb is not installed: pip install wandb)"
    online = bool(os.environ.get("WANDB_API_KEY")) and os.environ.get("WANDB_MODE") != "offline"
    mode = "online" if online else "offline"
    env = {"WANDB_MODE": mode, "WANDB_DIR": str(run_dir.resolve()), "WANDB_SILENT": "true"}
    callback = WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT", "medtune"),
                                   group=group, dir=str(run_dir.resolve()),
                                   excludes=["train/seconds", "node_id"])
    where = ("online, one run per trial in group " + group if online else
             f"offline (no WANDB_API_KEY), runs in {run_dir / 'wandb'}; `wandb sync` uploads them")
    return [callback], env, f"W&B: {where}"


def _check_data(fixed: dict[str, Any]) -> None:
    """Read, validate and cache the data once, before any trial: a bad dataset costs no trial."""
    from trainables.grading import load_data

    cfg = TrainConfig.from_dict(fixed)
    load_data(cfg)  # raises DatasetError listing every problem


def run_search(experiment: Experiment, store: RunStore, settings: dict[str, Any], *, resume: bool,
               command: list[str]) -> int:
    """Run (or resume) the search into `store`'s run folder; 0 when every trial ran."""
    fixed = dict(settings["fixed"])
    if settings["demo"] and not fixed.get("data"):
        fixed["data"] = str(ensure_demo(experiment.dataset, Path(settings["cache_dir"])))
        settings = {**settings, "fixed": fixed}
    if not fixed.get("data"):
        raise ConfigError("no dataset: pass --data DIR or --demo")
    os.environ["MEDTUNE_CACHE"] = settings["cache_dir"]
    _check_data(fixed)

    run_dir, run_id = store.local, store.run_id
    callbacks, env, wandb_line = wandb_setup(settings["wandb"], run_dir, run_id)
    env = {"MEDTUNE_CACHE": settings["cache_dir"], **env}
    os.environ.update(env)
    connect_ray(env=env)
    check_resources(settings["cpus_per_trial"], settings["gpus_per_trial"])
    run_dir.mkdir(parents=True, exist_ok=True)  # only now: a refused request leaves nothing
    plan = SearchPlan(
        experiment=experiment, store=store, fixed=fixed,
        pinned=settings["pinned"],
        num_samples=settings["num_samples"], max_epochs=settings["max_epochs"],
        seed=settings["seed"], cpus_per_trial=settings["cpus_per_trial"],
        gpus_per_trial=settings["gpus_per_trial"],
        max_concurrent=settings["max_concurrent"] or default_concurrency(
            settings["cpus_per_trial"], settings["gpus_per_trial"]),
        wandb=settings["wandb"], top_k=settings["top_k"])
    if not resume:
        (run_dir / "config.json").write_text(json.dumps({
            "experiment": experiment.name, "run_id": run_id, "command": command,
            "results": store.results, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "settings": settings,
        }, indent=1))
        (run_dir / "environment.json").write_text(json.dumps(describe(), indent=1))
        store.push()  # an object store has the run's config before any trial starts

    print(f"{experiment.name}: {plan.num_samples} trials of up to {plan.max_epochs} epochs, "
          f"{plan.max_concurrent} at a time ({plan.cpus_per_trial:g} CPU, "
          f"{plan.gpus_per_trial:g} GPU each) -> {store.location}", flush=True)
    if store.uri:
        print(f"staging the run folder's own files in {run_dir}; Ray Tune writes tune/ "
              f"straight to {store.uri}", flush=True)
    print(wandb_line, flush=True)
    progress = Progress(experiment.metric, experiment.mode, plan.num_samples)
    started = time.monotonic()
    if resume:
        print(f"resuming {store.location}", flush=True)
        tuner = restored_tuner(plan, [progress, *callbacks],
                               startup_trials=settings["startup_trials"])
    else:
        tuner = new_tuner(plan, [progress, *callbacks], startup_trials=settings["startup_trials"],
                          grace_period=settings["grace_period"],
                          reduction_factor=settings["reduction_factor"])
    results = tuner.fit()
    trials = write_tables(plan, results)
    if len(trials) and (trials["status"] != "not run").sum() >= plan.num_samples:
        stale = mark_stale_trials_failed(plan.storage_url, plan.run_id)
        if stale:
            print(f"marked {stale} trial(s) a killed driver left RUNNING in study.db as failed")
    store.push()
    minutes = (time.monotonic() - started) / 60
    return _summary(plan, trials, minutes)


def _summary(plan: SearchPlan, trials: Any, minutes: float) -> int:
    metric = plan.experiment.metric
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    print(f"\n{len(trials)} of {plan.num_samples} trials in {minutes:.1f} min: "
          + ", ".join(f"{n} {s}" for s, n in counts.items()), flush=True)
    finished = len(trials[trials["status"] != "not run"]) if len(trials) else 0
    best_file = plan.run_dir / "best" / "config.json"
    if best_file.is_file():
        best = json.loads(best_file.read_text())
        print(f"best {metric} {best['value']:.4f}: trial {best['trial_id']}, epoch {best['epoch']}")
        where = plan.store.location
        print(f"run folder: {where}  (reproduce: python -m search.reproduce {where}/best/config.json)")
    if finished < plan.num_samples:
        print(f"the search was interrupted: continue it with python -m search.run "
              f"{plan.experiment.name} --results {plan.store.results} --name "
              f"{plan.run_id} --resume")
        return 130
    if not best_file.is_file():
        print("no trial produced a result; see the error column of trials.parquet")
        return 1
    return 0
