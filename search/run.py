"""Search one experiment's hyperparameters: Optuna TPE inside Ray Tune, ASHA early stopping.

    python -m search.run deepdrid_attention --demo                  # generated data, CPU, minutes
    python -m search.run deepdrid_attention --data /data/DeepDRiD --gpus-per-trial 0.5
    python -m search.run deepdrid_attention --resume                # the latest run, continued
    python -m search.run deepdrid_attention --name r1 --resume      # a named run, continued
    python -m search.run deepdrid_finetune --demo --smoke-test      # 2 trials, 1 epoch: plumbing

A run folder RESULTS/<experiment>/<run-id>/ gets config.json, environment.json, tune/,
study.db, trials.parquet, epochs.parquet and best/{config,top_k}.json (results/README.md).
On a cluster (`ray up cluster/gpu.yaml`), set RAY_ADDRESS and put --results on shared storage:
a folder every node mounts, or an object-store URI (s3://, gs://; see search/engine/storage.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from search.cli import (
    cpus,
    experiment_parser,
    gpus,
    nonnegative_int,
    positive_float,
    positive_int,
    run,
    setup_logging,
)
from search.engine.objectives import needs_cost, parse_objectives
from search.engine.spec import DEFAULT_PLACEMENT_TIMEOUT, RunSpec
from search.engine.storage import RunStore, is_uri, latest_run
from spaces import get_experiment
from spaces.base import Experiment
from trainables.data.cache import cache_root
from trainables.errors import ConfigError
from trainables.progress import say
from trainables.train.config import parse_overrides

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "nsga2")
SCHEDULERS = ("asha", "fifo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = experiment_parser("python -m search.run", __doc__,
                          demo_help="generated data and the demo budget",
                          data_help="dataset root (on every node of a cluster)")
    p.add_argument("--num-samples", type=positive_int, help="trials in total")
    p.add_argument("--max-epochs", type=positive_int, help="epochs of a trial ASHA never stops")
    p.add_argument("--results", default="results",
                   help="output root: a folder (default results/; shared storage on a cluster) "
                        "or a URI such as s3://bucket/medtune")
    p.add_argument("--name", help="run id (default: a timestamp; with --resume: the latest run)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seeds the sampler and every trial")
    p.add_argument("--top-k", type=positive_int,
                   help="configurations the final step retrains and bags (default: the "
                        "experiment's, 3)")
    p.add_argument("--cpus-per-trial", type=cpus, help="fractions allowed below 1")
    p.add_argument("--gpus-per-trial", type=gpus, help="fractions allowed, e.g. 0.5")
    p.add_argument("--max-concurrent", type=positive_int, help="default: as many as the cluster fits")
    p.add_argument("--placement-timeout", type=positive_float, metavar="MINUTES",
                   help="stop when trials wait this long with none running (default 15): no "
                        "node had room and the autoscaler started none (with --resume: "
                        "replaces the run's)")
    p.add_argument("--budget-gpu-hours", type=positive_float, metavar="H",
                   help="no new trial once the search's GPU-hours (resources held x Ray's trial "
                        "time, time stopped not counted), the running trials' rest and one more "
                        "trial would pass H (with --resume: replaces the run's)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="tpe (default: Optuna's TPE after the experiment's random start-up "
                        "trials), random (Optuna's random sampler; a baseline) or nsga2 "
                        "(with --objectives: Optuna's NSGA-II)")
    p.add_argument("--objectives", metavar="METRIC,OBJ,...",
                   help="several objectives: the experiment's metric first (ASHA stops on it), "
                        "then latency (ms per image), params, or reported metrics (val/loss; "
                        ":min or :max to say which way); writes best/pareto.json "
                        "(search/engine/objectives.py)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="asha",
                   help="asha (default: stops weak trials early) or fifo (every trial runs "
                        "all its epochs; a baseline)")
    p.add_argument("--reproducible", type=positive_int, nargs="?", const=4, metavar="BATCH",
                   help="the same search from the same seed whatever the concurrency: "
                        "configurations asked BATCH at a time (default 4), ASHA's cutoffs from "
                        "earlier batches (search/engine/reproducible.py); costs idle slots at batch ends")
    p.add_argument("--warm-start", nargs="+", metavar="RUN", default=[],
                   help="earlier run folders (or URIs) whose finished trials join the study as "
                        "priors, their best configurations tried first (search/engine/warmstart.py)")
    p.add_argument("--smoke-test", action="store_true", help="2 trials, 1 epoch, 2 batches")
    p.add_argument("--no-wandb", action="store_true", help="do not log to Weights & Biases")
    p.add_argument("--no-final", action="store_true",
                   help="stop after the search (python -m search.final RUN does the rest)")
    p.add_argument("--replay", metavar="TABLE",
                   help="no training: serve a learning-curve table (python -m search.bench "
                        "collect) through the search, in simulated time (search/engine/replay.py); "
                        "budget: the experiment's, or its demo's with --demo")
    p.add_argument("--no-baseline", action="store_true",
                   help="the final step does not train the experiment's defaults beside the "
                        "members (what the search bought is then not measured)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    experiment = get_experiment(args.experiment)
    if experiment.space is None:
        raise ConfigError(f"{experiment.name} has no search space yet")
    if args.resume:
        name = args.name or latest_run(args.results, experiment.name)
        store = RunStore.at(args.results, experiment.name, name)
        store.pull()  # an object store's run folder: into the local stage
        spec = RunSpec.from_dict(store.run_config("--resume")["settings"],
                                 f"--resume: {store.location}/config.json")
        # how long to wait for a node is not part of what the search is: a resume may change it
        if args.placement_timeout:
            spec = spec.replace(placement_timeout=args.placement_timeout)
        if args.budget_gpu_hours:
            spec = spec.replace(budget_gpu_hours=args.budget_gpu_hours)
    else:
        store = RunStore.at(args.results, experiment.name,
                            args.name or time.strftime("%Y%m%d-%H%M%S"))
        if store.exists():
            raise ConfigError(f"{store.location} exists: continue it with --resume or pick "
                              "another --name")
        if store.uri:  # a stage left by an earlier run of that name that never reached the store
            shutil.rmtree(store.local, ignore_errors=True)
            store.probe()  # no bucket, no write access: one line now, not after the data check
        spec = resolve(args, experiment)
        if args.replay:
            spec = replay_spec(args, experiment, spec)
    if spec.budget_gpu_hours and not spec.gpus_per_trial:
        raise ConfigError("--budget-gpu-hours counts GPU-hours, and the trials hold no GPU "
                          "(--gpus-per-trial 0)")
    from search.engine.search import run_search  # imports Ray: after the cheap checks

    code = run_search(experiment, store, spec, resume=args.resume,
                      command=[sys.executable, "-m", "search.run", *(argv or sys.argv[1:])],
                      verbose=args.verbose)
    if code != 0 or args.no_final or spec.replay:
        return code
    from search.final import outputs_line, run_final

    print("\nfinal step: retrain the best configurations, bag them, predict the test split",
          flush=True)
    summary = run_final(store.local, baseline=not args.no_baseline,
                        echo=say)
    store.push()
    print(outputs_line(store, summary))
    return 0


def resolve(args: argparse.Namespace, experiment: Experiment) -> RunSpec:
    """Everything that fixes the search, from the experiment and the command line. A trial's
    fixed config, each layer over the ones before it: TrainConfig's field defaults, the
    experiment's config (with --demo its demo settings), --smoke-test's small sizes, --set,
    --data, then --max-epochs (or the budget's epochs) and --seed; its phases must agree with
    those epochs. The budget (trials, epochs, resources, TPE's start, ASHA's rungs, top-k): the
    experiment's (with --demo its demo budget), each under its command-line flag. Later, and
    not here: --replay takes the table's fixed config under --set (`replay_spec`), the search
    fills in the demo set's path and the data's classes (`search.engine.search.prepare_data`) and
    stage 1's store, --resume reads this spec back from config.json (only
    --placement-timeout may change), and the final step sets each member's seed, sample and
    epochs."""
    budget = experiment.demo_budget if args.demo else experiment.budget
    overrides = parse_overrides(args.overrides)
    max_epochs = args.max_epochs or budget.max_epochs
    num_samples = args.num_samples or budget.num_samples
    if args.smoke_test:  # one epoch of each phase
        phases = experiment.config(demo=args.demo).phases
        max_epochs, num_samples = max(1, len(phases)), min(num_samples, 2)
        overrides = {"max_train_batches": 2, "max_eval_batches": 2, "image_size": 64,
                     **{f"phase_{p['name']}_epochs": 1 for p in phases}, **overrides}
    objectives = parse_objectives(args.objectives, experiment.metric, experiment.mode) \
        if args.objectives else []
    if args.sampler == "nsga2" and not objectives:
        raise ConfigError("--sampler nsga2 is a multi-objective sampler: give --objectives")
    if needs_cost(objectives):  # each trial measures what its model costs
        overrides["report_cost"] = True
    pinned = sorted(set(overrides) & set(experiment.searched))
    if pinned and not args.smoke_test:
        log.info("--set fixes %s for every trial: the search will not vary it", ", ".join(pinned))
    if args.data:  # absolute for the workers; a name (a MedMNIST flag) stays a name
        given = Path(args.data).expanduser()
        overrides["data"] = str(given.resolve()) if given.exists() else args.data
    cfg = experiment.config(demo=args.demo, overrides={**overrides, "epochs": max_epochs,
                                                       "seed": args.seed})
    if args.max_epochs:
        cfg.require_epochs(max_epochs, "--max-epochs")
    fixed = {k: v for k, v in cfg.to_dict().items()
             if k not in experiment.searched or k in overrides}
    return RunSpec(
        demo=args.demo, fixed=fixed, pinned={k: overrides[k] for k in pinned},
        num_samples=num_samples, max_epochs=max_epochs, seed=args.seed,
        cpus_per_trial=args.cpus_per_trial or budget.cpus_per_trial,
        gpus_per_trial=budget.gpus_per_trial if args.gpus_per_trial is None
        else args.gpus_per_trial,
        max_concurrent=args.max_concurrent, wandb=not args.no_wandb,
        placement_timeout=args.placement_timeout or DEFAULT_PLACEMENT_TIMEOUT,
        budget_gpu_hours=args.budget_gpu_hours,
        startup_trials=budget.startup_trials, grace_period=budget.grace_period,
        reduction_factor=budget.reduction_factor,
        sampler=args.sampler, scheduler=args.scheduler, batch=args.reproducible,
        objectives=[[o.key, o.mode] for o in objectives],
        warm_start=[run if is_uri(run) else str(Path(run).expanduser().resolve())
                    for run in args.warm_start],
        top_k=args.top_k or budget.top_k, cache_dir=str(cache_root(cfg.cache_dir)))


def replay_spec(args: argparse.Namespace, experiment: Experiment, spec: RunSpec) -> RunSpec:
    """The spec of a search served from a learning-curve table: the table's fixed trial
    config (its data need not exist here) under this command's --set values, epochs at most
    the table's, the real trainable replaced by the replay one."""
    from search.engine.curves import read_curves
    from search.engine.replay import REPLAY_EPOCH_SECONDS, load_surrogate
    from trainables.train.config import TrainConfig

    curves = read_curves(args.replay)
    if curves.meta["experiment"] != experiment.name:
        raise ConfigError(f"--replay {args.replay}: a table of {curves.meta['experiment']}, not "
                          f"{experiment.name}")
    missing = [k for k, _ in spec.objectives if k not in curves.frame.columns]
    if missing:
        raise ConfigError(f"--objectives with --replay {args.replay}: the table records no "
                          f"{', '.join(missing)}")
    max_epochs = args.max_epochs or min(spec.max_epochs, curves.epochs)
    if max_epochs > curves.epochs:
        raise ConfigError(f"--max-epochs {max_epochs}: {args.replay} records {curves.epochs} "
                          "epochs a configuration")
    overrides = parse_overrides(args.overrides)
    cfg = TrainConfig.from_dict({**curves.meta["fixed"], **overrides, "epochs": max_epochs,
                                 "seed": args.seed})
    fixed = {k: v for k, v in cfg.to_dict().items()
             if k not in experiment.searched or k in overrides}
    surrogate = load_surrogate(args.replay)
    return spec.replace(fixed=fixed, max_epochs=max_epochs, demo=False,
                        grace_period=min(spec.grace_period, max_epochs),
                        replay={"table": str(Path(args.replay).resolve()),
                                "time_scale": REPLAY_EPOCH_SECONDS / surrogate.median_seconds})


if __name__ == "__main__":
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    run(main)
