"""The final step's engine: choose the members, train them (and the configurations measured
beside them) as Ray tasks, score and bag them, write the run folder's final/ and submission/.
`python -m search.final` (search/final.py) puts these steps together with the report
(search/report/final.py) and W&B (search/engine/wandb_log.py)."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search.engine.bagging import METHODS, bag, greedy_selection
from search.engine.gain import (
    SplitPredictions,
    cross_fitted,
    defaults_configs,
    describe_cross_fitted,
    gain_lines,
    gain_summary,
    resampling_units,
    searched_defaults,
)
from search.engine.ledger import describe as describe_ledger
from search.engine.ledger import run_ledger
from search.engine.members import MemberFailure, TrainedMember, train_members
from search.engine.spec import RunSpec
from spaces import get_experiment
from trainables.errors import ConfigError, MedtuneError
from trainables.tasks import Task
from trainables.train.config import TrainConfig
from trainables.train.reporting import short_node


def member_config(record: dict[str, Any], index: int, epochs: int) -> TrainConfig:
    """The i-th member: the trial's config at full length (a phased trial whose phases set
    their own epochs keeps them), its own seed and bootstrap sample."""
    base = TrainConfig.from_dict(record["config"])
    return base.replace(epochs=epochs, seed=base.seed + 1 + index, bootstrap=base.seed + index,
                        max_eval_batches=0)


def write_member(folder: Path, member: TrainedMember) -> None:
    """A member's folder: its weights and metadata.json (nothing else: no checkpoints)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(member.weights)
    (folder / "metadata.json").write_text(json.dumps(member.metadata, indent=1))


def join_cluster(cache_dir: str) -> None:
    """The Ray the search used (still connected after search.run), else the cluster at
    RAY_ADDRESS or a local one, with the run's image cache folder for every worker."""
    import ray

    from search.engine.driver import connect_ray

    os.environ.setdefault("MEDTUNE_CACHE", cache_dir)
    if not ray.is_initialized():
        connect_ray(env={"MEDTUNE_CACHE": cache_dir})


SELECTIONS = ("top-k", "greedy")
GREEDY_ROUNDS_PER_MEMBER = 2  # greedy selection's rounds: twice the members


def choose_members(run_dir: Path, wanted: int, epochs: int, echo: Any, select: str = "top-k",
                   pick: str | None = None) -> tuple[list[dict[str, Any]], list[TrainConfig]]:
    """The search's best `wanted` records (best first; for greedy selection, then the best
    trial of each architecture the top k lack; with `pick`, the Pareto front's trials that
    meet its constraints, best first by the first objective) and each member's config,
    `epochs` long."""
    top_file = run_dir / "best" / "top_k.json"
    if not top_file.is_file():
        raise ConfigError(f"{top_file} not found: finish the search first (python -m search.run)")
    ranked = picked(run_dir, pick, echo) if pick else json.loads(top_file.read_text())
    if wanted > len(ranked):
        echo(f"{top_file} holds {len(ranked)} configuration(s): training {len(ranked)}, "
             f"not {wanted}")
    records = ranked[:wanted]
    pool_file = run_dir / "best" / "ranked.json"
    if select == "greedy" and pool_file.is_file():
        models = {r["config"]["model"] for r in records}
        for record in json.loads(pool_file.read_text()):
            if record["config"]["model"] not in models:
                models.add(record["config"]["model"])
                records.append(record)
    configs = [member_config(r, i, epochs) for i, r in enumerate(records)]
    for i, (record, cfg) in enumerate(zip(records, configs, strict=True)):
        echo(f"member {i + 1}/{len(records)}: trial {record['trial_id']} ({cfg.model}), "
             f"{cfg.epochs} epochs, seed {cfg.seed}, bootstrap sample {cfg.bootstrap}")
    return records, configs


def picked(run_dir: Path, pick: str, echo: Any) -> list[dict[str, Any]]:
    """The trials of best/pareto.json that meet `pick`'s constraints (search.engine.objectives)."""
    from search.engine.objectives import meets, parse_pick

    front_file = run_dir / "best" / "pareto.json"
    if not front_file.is_file():
        raise ConfigError(f"--pick: {front_file} not found: --pick chooses from the Pareto front "
                          "of a search with --objectives")
    front = json.loads(front_file.read_text())
    constraints = parse_pick(pick)
    chosen = [r for r in front if meets(r["objectives"], constraints)]
    if not chosen:
        shown = "; ".join(f"trial {r['trial_id']}: " + ", ".join(
            f"{k} {v:.4g}" for k, v in r["objectives"].items()) for r in front)
        raise ConfigError(f"--pick {pick}: no trial of the Pareto front meets it ({shown})")
    echo(f"--pick {pick}: {len(chosen)} of the front's {len(front)} trial(s) meet it")
    return chosen


def keep_members(run_dir: Path, records: list[dict[str, Any]],
                 outcomes: list[TrainedMember | MemberFailure],
                 ) -> tuple[list[tuple[int, dict[str, Any], TrainedMember]], list[dict[str, Any]]]:
    """Write the trained members into final/ (replacing an earlier final step's, only now that
    new ones exist); returns (member number, record, member) of each and the failures."""
    kept = [(i + 1, r, m) for i, (r, m) in enumerate(zip(records, outcomes, strict=True))
            if isinstance(m, TrainedMember)]
    failed = [{"member": i + 1, "trial_id": r["trial_id"], "error": m.error}
              for i, (r, m) in enumerate(zip(records, outcomes, strict=True))
              if isinstance(m, MemberFailure)]
    if not kept:
        raise MedtuneError("the final step trained no member: "
                           + "; ".join(f"member {f['member']}: {f['error']}" for f in failed))
    for old in [*(run_dir / "final").glob("member_*"), run_dir / "final" / "defaults"]:
        shutil.rmtree(old, ignore_errors=True)
    for old in (run_dir / "submission").glob("*.csv"):
        old.unlink()
    for number, _, member in kept:
        write_member(run_dir / "final" / f"member_{number}", member)
    return kept, failed


@dataclass
class FinalPlan:
    """What the final step trains, chosen from the run folder (nothing trained yet)."""

    run_dir: Path
    experiment: Any
    spec: RunSpec
    method: str
    select: str
    pick: str | None
    wanted: int  # the top k (beyond them with --select greedy: each architecture's best)
    records: list[dict[str, Any]]
    configs: list[TrainConfig]
    single: TrainConfig | None  # a two-stage run's single-stage baseline
    defaults: list[TrainConfig]  # the experiment's defaults with the first members' seeds

    @property
    def task(self) -> Task:
        return self.experiment.task


@dataclass
class FinalTraining:
    """What the Ray tasks of the final step gave back."""

    kept: list[tuple[int, Any, TrainedMember]]  # (member number, its record, the member)
    failed: list[dict[str, Any]]
    defaults: list[TrainedMember | MemberFailure]
    single: TrainedMember | MemberFailure | None
    started: float  # time.monotonic() when training began


def choose_final(run_dir: Path, *, top_k: int | None, method: str, select: str | None,
                 baseline: bool, pick: str | None, echo: Any) -> FinalPlan:
    """The members (best/top_k.json, or --pick from the Pareto front), and the configurations
    trained beside them; every wrong option is a ConfigError before anything trains."""
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    run_config = json.loads((run_dir / "config.json").read_text())
    spec = RunSpec.from_dict(run_config["settings"], f"{run_dir}/config.json")
    if spec.replay:
        raise ConfigError(f"{run_dir} is a replayed search (--replay {spec.replay['table']})"
                          ": it trained no model, so there is nothing to retrain")
    experiment = get_experiment(run_config["experiment"])
    if method == "vote" and not experiment.task.votes:
        raise ConfigError("--method vote is for single-label tasks: a multi-label bag averages "
                          "probabilities (--method mean)")
    select = select or experiment.final_select
    if select not in SELECTIONS:
        raise ConfigError(f"--select {select!r}: use one of {', '.join(SELECTIONS)}")
    wanted = top_k or spec.top_k
    records, configs = choose_members(run_dir, wanted, spec.max_epochs, echo, select, pick)
    return FinalPlan(
        run_dir=run_dir, experiment=experiment, spec=spec, method=method, select=select,
        pick=pick, wanted=wanted, records=records, configs=configs,
        single=single_stage_baseline(configs[0]),
        defaults=defaults_configs(experiment, spec, configs[:wanted]) if baseline else [])


def train_final(plan: FinalPlan, *, tta: bool, echo: Any) -> FinalTraining:
    """Every member, the single-stage baseline and the defaults, as Ray tasks on the cluster;
    the members that trained are kept in the run folder (final/member_<n>/)."""
    from search.engine.driver import check_resources

    configs, single, defaults = plan.configs, plan.single, plan.defaults
    cpus, gpus = float(plan.spec.cpus_per_trial), float(plan.spec.gpus_per_trial)
    started = time.monotonic()
    join_cluster(plan.spec.cache_dir)
    check_resources(cpus, gpus)
    echo(f"training {len(plan.records)} members as Ray tasks, {cpus:g} CPU and {gpus:g} GPU "
         "each, as many at a time as the cluster holds")
    if single is not None:
        echo(f"baseline: member 1's configuration (same seed and sample) without stage 1, "
             f"trained beside the members (its lines say member {len(configs) + 1})")
    if defaults:
        first = len(configs) + (single is not None) + 1
        echo(f"defaults: the experiment's own configuration with the seeds and samples of "
             f"members 1-{len(defaults)}, trained beside them (its lines say member "
             f"{first}-{first + len(defaults) - 1}; --no-baseline skips it)")
    extra = ([single] if single is not None else []) + defaults
    outcomes = train_members(configs + extra, metric=plan.experiment.metric,
                             mode=plan.experiment.mode, cpus=cpus, gpus=gpus, tta=tta, echo=echo)
    defaults_outcomes = [outcomes.pop(len(configs) + (single is not None)) for _ in defaults]
    single_outcome = outcomes.pop() if single is not None else None
    kept, failed = keep_members(plan.run_dir, plan.records, outcomes)
    return FinalTraining(kept=kept, failed=failed, defaults=defaults_outcomes,
                         single=single_outcome, started=started)


def score_final(plan: FinalPlan, trained: FinalTraining, data: Any, *, tta: bool,
                echo: Any) -> tuple[dict[str, Any], list[float], np.ndarray]:
    """Each member's scores, the members' weights (top k, or greedy selection), the bag on
    validation and on a labelled test split, and beside them the single-stage baseline and the
    defaults: the summary (final/metrics.json), the weights and the bag's validation
    probabilities."""
    task, kept, configs = plan.task, trained.kept, plan.configs
    val_labels = data.labels["val"]
    metrics = [task.scores(val_labels, m.probs["val"]) for _, _, m in kept]
    in_top_k = [1.0 if n <= plan.wanted else 0.0 for n, _, _ in kept]
    weights = in_top_k
    if plan.select == "greedy":
        weights = [float(c) for c in greedy_selection(
            [m.probs["val"] for _, _, m in kept],
            lambda probs: task.sign * task.value(val_labels, probs),
            rounds=GREEDY_ROUNDS_PER_MEMBER * len(kept))]
    bag_val = bag([m.probs["val"] for _, _, m in kept], plan.method, weights)
    summary: dict[str, Any] = {
        "experiment": plan.experiment.name, "run_id": plan.run_dir.name, "task": task.kind,
        "metric": task.metric, "method": plan.method, "tta": tta,
        "class_names": data.index.class_names,
        "members": [{"member": n, "trial_id": r["trial_id"], "seed": configs[n - 1].seed,
                     "model": configs[n - 1].model, "node_id": m.node_id, "device": m.device,
                     "weight": w, "val": v}
                    for (n, r, m), v, w in zip(kept, metrics, weights, strict=True)],
        "select": plan.select, "pick": plan.pick,
        "failed": trained.failed, "bag": {"val": task.scores(val_labels, bag_val)},
        "spread": {k: float(np.std([m[k] for m in metrics])) for k, _ in task.columns},
        "minutes": round((time.monotonic() - trained.started) / 60, 2),
    }
    summary.update(task.cuts(val_labels, bag_val, data.index.class_names))  # per label
    if data.index.labelled("test") and all("test" in m.probs for _, _, m in kept):
        bag_test = bag([m.probs["test"] for _, _, m in kept], plan.method, weights)
        summary["bag"]["test"] = task.scores(data.labels["test"], bag_test)
    if plan.select == "greedy":
        summary["top_k_bag"] = _scored_bag(kept, in_top_k, plan.method, task, data)
        groups, _ = resampling_units(data.index.split("val")["patient"].to_numpy())
        if len(groups) >= 2:  # two halves to choose on and score on
            summary["cross_fitted"] = cross_fitted(
                task, val_labels, [m.probs["val"] for _, _, m in kept], method=plan.method,
                top_k=in_top_k, rounds=GREEDY_ROUNDS_PER_MEMBER * len(kept), groups=groups)
    if trained.single is not None:
        summary["two_stage"] = two_stage_summary(configs[0], trained.single, kept[0][2],
                                                 summary, task, data)
        echo(_two_stage_lines(summary["two_stage"], task))
    if plan.defaults:
        summary["gain"] = _gain(plan.experiment, plan.defaults, trained.defaults, kept,
                                plan.method, weights, data)
    summary["ledger"] = _ledger(plan, trained, summary)
    return summary, weights, bag_val


def _ledger(plan: FinalPlan, trained: FinalTraining, summary: dict[str, Any]) -> dict[str, Any]:
    """The run's cost (search.engine.ledger): this run's trials, every model the final step
    trained (members, the defaults, the single-stage baseline), stage 1 if it was built."""
    listed = pd.read_parquet(plan.run_dir / "trials.parquet")
    models: list[tuple[str, TrainedMember | MemberFailure | None]] = [
        (f"member {n}", m) for n, _, m in trained.kept]
    models += [(f"defaults {i}", m) for i, m in enumerate(trained.defaults, 1)]
    models.append(("single-stage baseline", trained.single))
    stage1 = (summary.get("two_stage") or {}).get("stage1", {})
    return run_ledger(listed[listed["status"] != "prior"],
                      [{"model": name, **m.metadata["trained_on"]} for name, m in models
                       if isinstance(m, TrainedMember)],
                      stage1.get("minutes"), float(plan.spec.cpus_per_trial),
                      float(plan.spec.gpus_per_trial))


def write_final(plan: FinalPlan, trained: FinalTraining, summary: dict[str, Any],
                weights: list[float], bag_val: np.ndarray, data: Any, *, echo: Any) -> None:
    """The defaults' predictions, the submission and the bag's validation probabilities into
    the run folder; the table of members and bag on the console."""
    task, run_dir = plan.task, plan.run_dir
    if plan.defaults:
        _write_defaults(run_dir / "final" / "defaults", task, data,
                        list(zip(plan.defaults, trained.defaults, strict=True)))
    summary["submission"] = _write_submission(run_dir / "submission", task, data.index,
                                              trained.kept, plan.method, weights)
    np.save(run_dir / "final" / "val_bag_probs.npy", bag_val)
    echo(_table(summary, task))
    echo(describe_ledger(summary["ledger"]))
    if summary.get("cross_fitted"):
        echo(describe_cross_fitted(summary["cross_fitted"]))
    if summary.get("gain"):
        echo(gain_lines(summary["gain"]))
    if summary["submission"] is None:
        echo("no test split in this dataset: no submission written (the bag is scored on "
             "validation only)")


def _gain(experiment: Any, configs: list[TrainConfig],
          outcomes: list[TrainedMember | MemberFailure],
          kept: list[tuple[int, Any, TrainedMember]], method: str, weights: list[float],
          data: Any) -> dict[str, Any]:
    """The defaults against the members and the bag (search.engine.gain), on validation and on a
    labelled test split (no split when every default failed)."""
    task = experiment.task
    trained = [m for m in outcomes if isinstance(m, TrainedMember)]
    failed = [{"seed": c.seed, "error": m.error}
              for c, m in zip(configs, outcomes, strict=True) if isinstance(m, MemberFailure)]
    defaults = {"config": searched_defaults(experiment, configs[0]),
                "seeds": [c.seed for c in configs], "failed": failed}
    if not trained:
        return {"metric": task.metric, "name": task.name, "defaults": defaults}
    splits = {}
    for split in ("val", "test"):
        if split != "val" and not data.index.labelled(split):
            continue
        every = [*trained, *(m for _, _, m in kept)]
        if not all(split in m.probs for m in every):
            continue
        splits[split] = SplitPredictions(
            labels=data.labels[split], defaults=[m.probs[split] for m in trained],
            members={n: m.probs[split] for n, _, m in kept},
            bag=bag([m.probs[split] for _, _, m in kept], method, weights))
    patients = {s: data.index.split(s)["patient"].to_numpy() for s in splits}
    return gain_summary(task, splits, patients, defaults=defaults)


def _write_defaults(folder: Path, task: Task, data: Any,
                    trained: list[tuple[TrainConfig, TrainedMember | MemberFailure]]) -> None:
    """`final/defaults/seed_<s>_<split>.csv`: each default's predictions with probabilities on
    validation and test (no weights: the defaults are a yardstick, not a product)."""
    folder.mkdir(parents=True, exist_ok=True)
    for cfg, member in trained:
        if not isinstance(member, TrainedMember):
            continue
        for split, probs in member.probs.items():
            task.submission(data.index.submission_ids(split), probs,
                            data.index.class_names, with_probs=True).to_csv(
                folder / f"seed_{cfg.seed}_{split}.csv", index=False)


def single_stage_baseline(cfg: TrainConfig) -> TrainConfig | None:
    """For a run that starts from stage 1: the same configuration from ImageNet (or whatever
    `weights` says) alone, the single-stage baseline on the same budget; else None."""
    from trainables.train.stage1 import uses_stage1

    return cfg.replace(stage1_data="", stage1_weights="") if uses_stage1(cfg) else None


def two_stage_summary(cfg: TrainConfig, baseline: TrainedMember | MemberFailure,
                      first: TrainedMember, summary: dict[str, Any], task: Task,
                      data: Any) -> dict[str, Any]:
    """Stage 1's own record, and the stage-2 result (the first member, trained like the
    baseline but from stage 1, and the bag) beside the single-stage baseline."""
    from trainables.train.stage1 import stage1_record

    def scored(member: TrainedMember) -> dict[str, Any]:
        return {**_split_scores(task, data, member.probs),
                "minutes": member.metadata["trained_on"]["minutes"]}

    return {"stage1": stage1_record(cfg), "stage2_member_1": scored(first),
            "stage2_bag": summary["bag"],
            "baseline": {"error": baseline.error} if isinstance(baseline, MemberFailure)
            else scored(baseline)}


def _two_stage_lines(two: dict[str, Any], task: Task) -> str:
    metric, name = task.columns[0]
    stage1 = two["stage1"]
    lines = ["two-stage transfer:"]
    if "value" in stage1:
        lines.append(f"  stage 1 on {stage1['data']}: {name} {stage1['value']:.4f} on its own "
                     f"validation (epoch {stage1['epoch']} of {stage1['epochs']}, "
                     f"{stage1['minutes']:.1f} min)")
    elif "source" in stage1:
        lines.append(f"  stage 1: the file {stage1['source']}")
    if "error" in two["baseline"]:
        lines.append(f"  baseline failed: {two['baseline']['error']}")
        return "\n".join(lines)
    for label, values in (("single-stage baseline", two["baseline"]),
                          ("stage 2, member 1 (same seed)", two["stage2_member_1"]),
                          ("stage 2, the bag", two["stage2_bag"])):
        test = values.get("test")
        lines.append(f"  {label:30} val {name} {values['val'][metric]:.4f}"
                     + (f", test {test[metric]:.4f}" if test else ""))
    return "\n".join(lines)


def _scored_bag(kept: list[tuple[int, Any, TrainedMember]], weights: list[float], method: str,
                task: Task, data: Any) -> dict[str, Any]:
    """The task's scores of a weighted bag on validation (and test, if labelled)."""
    return _split_scores(task, data, {
        split: bag([m.probs[split] for _, _, m in kept], method, weights)
        for split in ("val", "test") if all(split in m.probs for _, _, m in kept)})


def _split_scores(task: Task, data: Any, probs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The task's scores of `probs` (split -> probabilities) on validation, and on test where
    the test split has labels."""
    return {split: task.scores(data.labels[split], p) for split, p in probs.items()
            if split == "val" or data.index.labelled(split)}


def _write_submission(folder: Path, task: Task, index: Any,
                      kept: list[tuple[int, Any, TrainedMember]], method: str,
                      weights: list[float]) -> str | None:
    """The submission CSV in the task's format and a CSV per member (with probabilities);
    None without a test split."""
    if not len(index.split("test")) or any("test" not in m.probs for _, _, m in kept):
        return None
    ids = index.submission_ids("test")  # the image file name (Kaggle), or the dataset's ID
    folder.mkdir(parents=True, exist_ok=True)
    for number, _, member in kept:
        task.submission(ids, member.probs["test"], index.class_names,
                        with_probs=True).to_csv(folder / f"member_{number}.csv", index=False)
    bagged = bag([m.probs["test"] for _, _, m in kept], method, weights)
    task.submission(ids, bagged, index.class_names).to_csv(
        folder / "test_predictions.csv", index=False)
    return "submission/test_predictions.csv"


def _table(summary: dict[str, Any], task: Task) -> str:
    width = max(10, *(len(name) + 2 for _, name in task.columns))
    head = "".join(f"{name:>{width}}" for _, name in task.columns)
    rows = [f"{'':14}{head}  trained on"]

    def cells(values: dict[str, float]) -> str:
        return "".join(f"{values[k]:{width}.4f}" for k, _ in task.columns)

    for m in summary["members"]:
        weight = f", weight {m['weight']:g}" if summary.get("select") == "greedy" else ""
        rows.append(f"member {m['member']:<7}{cells(m['val'])}  {m['model']}{weight}, "
                    f"{m['device']}, node {short_node(m['node_id'])}")
    label = "greedy bag" if summary.get("select") == "greedy" else f"bag ({summary['method']})"
    rows.append(f"{label:14}{cells(summary['bag']['val'])}")
    if summary.get("top_k_bag"):
        rows.append(f"{'top-k bag':14}{cells(summary['top_k_bag']['val'])}")
    rows.append(f"{'member spread':14}{cells(summary['spread'])}")
    if "test" in summary["bag"]:
        rows.append(f"{'bag on test':14}{cells(summary['bag']['test'])}  (the test split's labels)")
    for f in summary["failed"]:
        rows.append(f"member {f['member']} (trial {f['trial_id']}) failed: {f['error']}")
    return "validation (bag against members):\n  " + "\n  ".join(rows)
