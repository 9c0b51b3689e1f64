"""One search from start to run folder: data checked, Ray joined, Tuner run, tables written."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from search.engine.binding import bound_to, stop_note
from search.engine.console import LOG_FILE, ray_output_to
from search.engine.driver import (
    ClusterShape,
    SearchPlan,
    binding,
    check_resources,
    connect_ray,
    default_concurrency,
    mark_stale_trials_failed,
    new_tuner,
    restored_tuner,
)
from search.engine.environment import describe
from search.engine.ledger import search_line
from search.engine.progress import Progress
from search.engine.pruning import CheckpointPruner
from search.engine.run_folder import write_tables
from search.engine.spec import RunSpec
from search.engine.storage import CONFIG_FILE, RunStore
from search.engine.wandb_log import wandb_online
from spaces.base import Experiment
from trainables.errors import ConfigError, StorageError
from trainables.train.config import TrainConfig

log = logging.getLogger(__name__)


def wandb_setup(enabled: bool, run_dir: Path, group: str) -> tuple[list[Any], dict[str, str], str]:
    """(callbacks, environment for every worker, a line saying what W&B will do).

    The API key is taken out of this process's environment: Ray's W&B callback would hand it
    to its logging actor in a runtime env, which Ray writes into its session logs
    (runtime_env_agent.log). Online, W&B logs in as `wandb login` does (the key goes to
    ~/.netrc, where W&B keeps it), and the logging actor, on this node, reads it there.
    """
    if not enabled:
        return [], {}, "W&B: off (--no-wandb)"
    try:
        import wandb

        from search.engine.wandb_log import WandbCallback
    except ImportError:
        return [], {}, "W&B: off (wandb is not installed: pip install wandb)"
    online = wandb_online()
    key = os.environ.pop("WANDB_API_KEY", None)
    # W&B keeps the settings it read when first set up in this process (an earlier offline
    # search in the same notebook): dropped, so that this search's mode and home are the ones
    # it logs in with (else the key silently never reaches ~/.netrc)
    wandb.teardown()
    if online and key:
        wandb.login(key=key, verify=False)
    env = {"WANDB_MODE": "online" if online else "offline", "WANDB_DIR": str(run_dir.resolve()),
           "WANDB_SILENT": "true"}
    callback = WandbCallback(project=os.environ.get("WANDB_PROJECT", "medtune"),
                             group=group, dir=str(run_dir.resolve()),
                             excludes=["train/seconds", "node_id"])
    why = "WANDB_MODE=offline" if key or os.environ.get("WANDB_MODE") == "offline" \
        else "no WANDB_API_KEY"
    where = ("online, one run per trial in group " + group if online else
             f"offline ({why}), runs in {run_dir / 'wandb'}; `wandb sync` uploads them")
    return [callback], env, f"W&B: {where}"


def _check_data(fixed: dict[str, Any]) -> Any:
    """Read, validate and cache the data once, before any trial: a bad dataset costs no trial.
    Returns the data's index (its class count goes into every trial's config)."""
    from trainables.data.trial_data import load_data, resolve_data
    from trainables.train.stage1 import stage1_config

    cfg, _ = resolve_data(TrainConfig.from_dict(fixed))
    index = load_data(cfg).index  # raises DatasetError listing every problem
    if cfg.stage1_data:  # stage 1's data too: checked and cached before its builder needs it
        load_data(resolve_data(stage1_config(cfg))[0])
    return index


def prepare_data(experiment: Experiment, spec: RunSpec) -> tuple[RunSpec, Any]:
    """The spec with the demo set's path and the data's class count filled in, once the
    data is checked and cached, and the data's index."""
    if spec.replay:  # recorded curves: no data is read, no image cached
        return spec, None
    fixed = dict(spec.fixed)
    if spec.demo:
        fixed.update(experiment.demo_paths(Path(spec.cache_dir), fixed))
    if not fixed.get("data"):
        raise ConfigError("no dataset: pass --data DIR or --demo")
    experiment.check(TrainConfig.from_dict(fixed))
    os.environ["MEDTUNE_CACHE"] = spec.cache_dir
    index = _check_data(fixed)
    fixed = {**fixed, "num_classes": index.num_classes}
    return spec.replace(fixed=fixed, classes=list(index.class_names)), index


def plan_search(experiment: Experiment, store: RunStore, spec: RunSpec,
                cluster: ClusterShape) -> SearchPlan:
    """The search's plan from its spec; concurrency from the cluster when not given."""
    cpus, gpus = spec.cpus_per_trial, spec.gpus_per_trial
    return SearchPlan(
        experiment=experiment, store=store, fixed=spec.fixed, pinned=spec.pinned,
        num_samples=spec.num_samples, max_epochs=spec.max_epochs, seed=spec.seed,
        cpus_per_trial=cpus, gpus_per_trial=gpus,
        max_concurrent=spec.max_concurrent or default_concurrency(cpus, gpus, cluster),
        wandb=spec.wandb, top_k=spec.top_k, demo=spec.demo, sampler=spec.sampler,
        scheduler=spec.scheduler, replay=spec.replay, batch=spec.batch,
        warm_start=tuple(spec.warm_start), objectives=tuple((k, m) for k, m in spec.objectives),
        budget_gpu_hours=spec.budget_gpu_hours)


def write_config_json(plan: SearchPlan, spec: RunSpec, command: list[str],
                     index: Any = None) -> None:
    """config.json (what fixes the run; the final step and --resume read it),
    environment.json and, where medtune drew the data's splits, split.csv; copied to an object
    store before any trial starts."""
    from search.engine.run_folder import write_split

    plan.run_dir.mkdir(parents=True, exist_ok=True)
    if index is not None and index.drawn_split:
        write_split(plan.run_dir, index)
    (plan.run_dir / CONFIG_FILE).write_text(json.dumps({
        "experiment": plan.experiment.name, "run_id": plan.run_id, "command": command,
        "results": plan.store.results, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": spec.to_dict(),
    }, indent=1))
    (plan.run_dir / "environment.json").write_text(json.dumps(describe(), indent=1))
    plan.store.push()


def run_search(experiment: Experiment, store: RunStore, spec: RunSpec, *, resume: bool,
               command: list[str], verbose: bool = False) -> int:
    """Run (or resume) the search into `store`'s run folder; 0 when every trial ran. Ray's own
    console output goes to the run's search.log (and to the console too with `verbose`)."""
    spec, index = prepare_data(experiment, spec)
    fresh = not store.local.exists()
    try:
        with ray_output_to(store.local / LOG_FILE, verbose=verbose):
            return _run_search(experiment, store, spec, index, resume=resume, command=command)
    except ConfigError:
        if fresh and not (store.local / CONFIG_FILE).exists():  # refused: the name stays free
            shutil.rmtree(store.local, ignore_errors=True)
        raise


def _run_search(experiment: Experiment, store: RunStore, spec: RunSpec, index: Any, *,
                resume: bool, command: list[str]) -> int:
    if spec.fixed.get("stage1_data") and not spec.fixed.get("stage1_store"):
        # stage-1 models live in the run folder: every node reads it (shared disk or object store)
        spec = spec.replace(fixed={**spec.fixed, "stage1_store": f"{store.uri}/stage1"
                                   if store.uri else str(store.local.resolve() / "stage1")})
    callbacks, env, wandb_line = wandb_setup(spec.wandb, store.local, store.run_id)
    env = {"MEDTUNE_CACHE": spec.cache_dir, **env}
    os.environ.update(env)
    connect_ray(env=env)
    cluster = check_resources(spec.cpus_per_trial, spec.gpus_per_trial)
    registry = None
    if spec.fixed.get("stage1_data"):  # leases on stage 1: alive while the search is
        from trainables.train.stage1 import start_registry

        registry = start_registry()
    plan = plan_search(experiment, store, spec, cluster)
    if not resume:  # only now: a refused request leaves the run's name free
        write_config_json(plan, spec, command, index)
    _describe(plan, cluster, wandb_line)
    if plan.warm_start and not resume:
        warm(plan, wandb_on=bool(callbacks))
    progress = Progress(experiment.metric, experiment.mode, plan.num_samples,
                        cpus=plan.cpus_per_trial, gpus=plan.gpus_per_trial,
                        autoscaler=cluster.autoscaler is not None,
                        placement_timeout=60 * spec.placement_timeout, store=store)
    callbacks = [progress, CheckpointPruner(), *callbacks]
    started = time.monotonic()
    if resume:
        print(f"resuming {store.location}", flush=True)
        tuner = restored_tuner(plan)
    else:
        tuner = new_tuner(plan, callbacks, startup_trials=spec.startup_trials,
                          grace_period=spec.grace_period, reduction_factor=spec.reduction_factor)
    with bound_to(plan.run_id, binding(plan, callbacks)):
        try:
            results = tuner.fit()
        except Exception as e:  # Ray's own error, often a consequence: was it the store?
            try:
                plan.store.probe()
            except StorageError as failed:
                log.debug("Ray Tune's error after the store failed: %r", e)
                raise _store_failed(plan, failed) from None
            raise
    del registry  # held until the trials ended
    trials = write_tables(plan, results)  # into the stage where the store is an object store
    label_study(plan)
    if progress.store_failed:  # it stopped the search: the store's line, not a summary
        raise _store_failed(plan, progress.store_failed)
    if len(trials) and (trials["status"] != "not run").sum() >= plan.num_samples:
        stale = mark_stale_trials_failed(plan.storage_url, plan.run_id)
        if stale:
            print(f"marked {stale} trial(s) a killed driver left RUNNING in study.db as failed")
    store.push()
    minutes = (time.monotonic() - started) / 60
    return _summary(plan, trials, minutes, stalled=progress.stalled)


def label_study(plan: SearchPlan) -> None:
    """What optuna-dashboard shows of the run beside the trials: the study's user attributes
    (experiment, metric, run folder, the best trial; the final step adds the report)."""
    import optuna

    study = optuna.load_study(study_name=plan.run_id, storage=plan.storage_url)
    labels: dict[str, Any] = {"experiment": plan.experiment.name, "run_folder": plan.store.location,
                              "metric": plan.experiment.metric, "mode": plan.experiment.mode}
    if plan.objectives:
        labels["objectives"] = [f"{k} ({m})" for k, m in plan.objectives]
    best = plan.run_dir / "best" / "config.json"
    if best.is_file():
        chosen = json.loads(best.read_text())
        labels["best_trial"] = f"{chosen['trial_id']} (epoch {chosen['epoch']}): {chosen['value']:.4f}"
        labels["reproduce"] = f"python -m search.reproduce {plan.store.location}/best/config.json"
    for key, value in labels.items():
        study.set_user_attr(key, value)


def dashboard_command(storage_url: str) -> str:
    """The optuna-dashboard command for a study (a database URL from the environment is not
    printed: it may hold a password)."""
    if storage_url == os.environ.get("MEDTUNE_STUDY_URL"):
        return 'optuna-dashboard "$MEDTUNE_STUDY_URL"'
    return f"optuna-dashboard sqlite:///{Path(storage_url.removeprefix('sqlite:///')).resolve()}"


def _resume_command(plan: SearchPlan) -> str:
    return (f"python -m search.run {plan.experiment.name} --results {plan.store.results} "
            f"--name {plan.run_id} --resume")


def _store_failed(plan: SearchPlan, failed: StorageError) -> StorageError:
    """The results store could not be written (an object store gone, a disk full or
    read-only): one line instead of Ray's traceback, with where the files written so far are
    (in `failed`) and how to continue once the store is back."""
    return StorageError(
        f"the search stopped: its results store failed ({failed}). Trials that could not save "
        f"there run again when it continues: once the store is back, {_resume_command(plan)}")


def warm(plan: SearchPlan, *, wandb_on: bool) -> None:
    """--warm-start: the earlier runs' trials into this run's study, before any trial."""
    import optuna

    from search.engine.searcher import study_directions
    from search.engine.warmstart import log_priors, warm_start

    study = optuna.create_study(
        study_name=plan.run_id, storage=plan.storage_url, load_if_exists=True,
        directions=study_directions(plan.experiment.mode, plan.objectives))
    warmed = warm_start(study, list(plan.warm_start),
                        space=plan.experiment.search_space(plan.demo), pinned=plan.pinned,
                        experiment=plan.experiment.name, metric=plan.experiment.metric,
                        mode=plan.experiment.mode, fixed=plan.fixed, max_epochs=plan.max_epochs,
                        first=plan.top_k, objectives=[list(o) for o in plan.objectives])
    for line in warmed.lines:
        print(line, flush=True)
    if wandb_on and warmed.priors:
        print(log_priors(plan.run_dir, plan.run_id, warmed, online=wandb_online()), flush=True)


def _describe(plan: SearchPlan, cluster: ClusterShape, wandb_line: str) -> None:
    print(f"{plan.experiment.name}: {plan.num_samples} trials of up to {plan.max_epochs} epochs, "
          f"{plan.max_concurrent} at a time ({plan.cpus_per_trial:g} CPU, "
          f"{plan.gpus_per_trial:g} GPU each) -> {plan.store.location}", flush=True)
    if plan.store.uri:
        print(f"staging the run folder's own files in {plan.run_dir}; Ray Tune writes tune/ "
              f"straight to {plan.store.uri}", flush=True)
    if cluster.autoscaler:
        known = all(t.known for t in cluster.types)
        print(f"autoscaler node types ({cluster.autoscaler}): " + ", ".join(map(str, cluster.types))
              if known else "autoscaler: its node types are not known here (set "
              "MEDTUNE_AUTOSCALER_CONFIG to its config to check requests against them)",
              flush=True)
    if plan.batch:
        print(f"reproducible: configurations asked {plan.batch} at a time, each batch once the "
              "one before it has ended; ASHA's cutoffs from earlier batches", flush=True)
    print(wandb_line, flush=True)


def _summary(plan: SearchPlan, trials: Any, minutes: float, *, stalled: str | None = None) -> int:
    metric = plan.experiment.metric
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    print(f"\n{len(trials)} of {plan.num_samples} trials in {minutes:.1f} min: "
          + ", ".join(f"{n} {s}" for s, n in counts.items()), flush=True)
    finished = len(trials[trials["status"] != "not run"]) if len(trials) else 0
    if plan.batch and len(trials):
        from search.engine.reproducible import idle_share

        idle = idle_share(trials, plan.max_concurrent)
        if idle is not None:
            print(f"reproducible: {plan.max_concurrent} trial slot(s) stood idle "
                  f"{100 * idle:.0f}% of the search's wall time (batch ends included)")
    best_file = plan.run_dir / "best" / "config.json"
    if best_file.is_file():
        best = json.loads(best_file.read_text())
        print(f"best {metric} {best['value']:.4f}: trial {best['trial_id']}, epoch {best['epoch']}")
        where = plan.store.location
        print(f"run folder: {where}  (reproduce: python -m search.reproduce {where}/best/config.json)")
        print(f"study: {dashboard_command(plan.storage_url)}  (pip install -e \".[dashboard]\")")
    if len(trials) and "gpu_hours" in trials:
        print(search_line(trials, plan.budget_gpu_hours))
    budget = stop_note(plan.run_id)
    if finished < plan.num_samples and budget and not stalled:
        print(f"stopped making trials: {budget}; the search ended with {finished} of "
              f"{plan.num_samples} trials")
        return 0 if best_file.is_file() else 1
    if finished < plan.num_samples:
        resume = _resume_command(plan)
        if stalled:
            print(f"stopped: {stalled}. The {finished} finished trial(s) are kept; once the "
                  f"cluster can place a trial, continue with {resume}")
            return 1
        print(f"the search was interrupted: continue it with {resume}")
        return 130
    if not best_file.is_file():
        print("no trial produced a result; see the error column of trials.parquet")
        return 1
    return 0
