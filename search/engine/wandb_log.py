"""W&B logging of a search: one W&B run per trial, all written by one logging actor.

Ray's `WandbLoggerCallback` starts two actors per trial (a queue and a logger, each a new
process, and the logger's `wandb.init` a W&B service process of its own) and hands each
result over with a blocking `ray.get`. On 2 cores that cost a tiny trial 1.7 s
(`python -m search.bench overhead`), and the driver, which handles results one at a time,
waited 1.3-1.6 s per result. Here one actor, started once per search on the driver's node,
keeps every trial's run open side by side (`wandb.init(reinit="create_new")`); the driver
sends it each result without waiting (calls from one caller run in order), and waits only at
the experiment's end, for the runs to finish. The final step's tables and images are one more
W&B run in the search's group (log_final).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from pathlib import Path
from typing import Any

import ray
from ray import tune

log = logging.getLogger(__name__)

FINISH_TIMEOUT_S = 600.0  # the runs' last writes (uploads, online) at the experiment's end
NOT_LOGGED = ("config", "trial_id", "node_id", "training_iteration")


def wandb_online() -> bool:
    """W&B logs online with WANDB_MODE=online, or with an API key and no WANDB_MODE=offline."""
    mode = os.environ.get("WANDB_MODE")
    return mode == "online" or (mode != "offline" and bool(os.environ.get("WANDB_API_KEY")))


class TrialRuns:
    """The logging actor: a W&B run per trial id."""

    def __init__(self, settings: dict[str, Any]) -> None:
        import wandb

        self.wandb, self.settings = wandb, settings
        self.runs: dict[str, Any] = {}

    def start(self, trial_id: str, name: str, config: dict[str, Any]) -> None:
        if trial_id not in self.runs:  # a trial restarted after a failure keeps its run
            self.runs[trial_id] = self.wandb.init(
                id=trial_id, name=name, config=config, reinit="create_new",
                allow_val_change=True, **self.settings)

    def log(self, trial_id: str, metrics: dict[str, float], step: int) -> None:
        run = self.runs.get(trial_id)
        if run is not None:
            run.log(metrics, step=step)

    def end(self, trial_id: str) -> None:
        run = self.runs.pop(trial_id, None)
        if run is not None:
            run.finish()

    def end_all(self) -> int:
        for trial_id in list(self.runs):
            self.end(trial_id)
        return len(self.runs)


class WandbCallback(tune.Callback):
    """A W&B run per trial (project, group, the run folder as `dir`): its config, and each
    result's numbers (but `excludes`) at step `training_iteration`."""

    def __init__(self, *, project: str, group: str, dir: str, excludes: list[str]) -> None:
        self.settings = {"project": project, "group": group, "dir": dir}
        self.excludes = set(excludes) | set(NOT_LOGGED)
        self._actor: Any = None
        self._started: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles the run config with its callbacks
        return {**self.__dict__, "_actor": None, "_started": set()}

    def _runs(self) -> Any:
        if self._actor is None:  # on the driver's node: the run folder's machine
            from search.engine.driver import on_driver_node

            self._actor = ray.remote(TrialRuns).options(
                max_restarts=-1, max_task_retries=-1, **on_driver_node()).remote(self.settings)
        return self._actor

    def _start(self, trial: Any) -> None:
        if trial.trial_id not in self._started:
            self._started.add(trial.trial_id)
            config = {k: v for k, v in trial.config.items() if k != "callbacks"}
            self._runs().start.remote(trial.trial_id, str(trial), config)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._start(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self._start(trial)
        metrics = {k: float(v) for k, v in result.items()
                   if k not in self.excludes and isinstance(v, numbers.Real)
                   and not isinstance(v, bool) and math.isfinite(v)}
        self._runs().log.remote(trial.trial_id, metrics, int(result.get("training_iteration", 0)))

    def _end(self, trial: Any) -> None:
        if trial.trial_id in self._started:
            self._started.discard(trial.trial_id)
            self._runs().end.remote(trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._actor is None:
            return
        try:
            ray.get(self._actor.end_all.remote(), timeout=FINISH_TIMEOUT_S)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError) as e:
            log.warning("W&B: the trials' runs did not all finish: %s", e)
        ray.kill(self._actor)
        self._actor = None
        self._started.clear()


def log_final(run_dir: Path, summary: dict[str, Any]) -> str:
    """The final step's tables and images as one W&B run in the search's group."""
    try:
        import wandb
    except ImportError:
        return "W&B: off (wandb is not installed)"
    import pandas as pd

    online = wandb_online()
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "medtune"), group=run_dir.name,
                     name=f"{run_dir.name}-final", job_type="final", dir=str(run_dir.resolve()),
                     mode="online" if online else "offline",
                     config={"method": summary["method"], "tta": summary["tta"],
                             "select": summary.get("select", "top-k"),
                             "members": [m["trial_id"] for m in summary["members"]]})
    members = pd.DataFrame([{"member": f"member {m['member']}", "trial_id": m["trial_id"],
                             "model": m["model"], "weight": m.get("weight", 1.0),
                             "device": m["device"], "node_id": m["node_id"], **m["val"]}
                            for m in summary["members"]]
                           + [{"member": "bag", "trial_id": "", **summary["bag"]["val"]}])
    report = run_dir / "report"
    logged: dict[str, Any] = {
        "final/members": wandb.Table(dataframe=members),
        **{f"final/bag_{k}": v for k, v in summary["bag"]["val"].items()},
        **{f"final/test_bag_{k}": v for k, v in summary["bag"].get("test", {}).items()},
        "final/gradcam": [wandb.Image(str(p), caption=p.stem)
                          for p in sorted((report / "gradcam").glob("*.png"))],
    }
    for name, figure in (("confusion_matrix", "confusion.png"), ("roc_curves", "roc.png")):
        if (report / figure).is_file():  # single-label: a confusion matrix; multi-label: ROC
            logged[f"final/{name}"] = wandb.Image(str(report / figure))
    if summary.get("top_k_bag"):  # greedy selection: the plain bag beside it
        logged.update({f"final/top_k_bag_{k}": v for k, v in summary["top_k_bag"]["val"].items()})
    if summary.get("cross_fitted"):  # and both where the greedy weights were not chosen
        c = summary["cross_fitted"]
        logged.update({f"final/cross_fitted_{name}_{k}": c[name][k]
                       for name in ("greedy", "top_k", "greedy_over_top_k") for k in c[name]})
    two = summary.get("two_stage")
    if two:  # stage 1's own result, and the single-stage baseline
        if "value" in two["stage1"]:
            logged["final/stage1_value"] = two["stage1"]["value"]
            logged["final/stage1_minutes"] = two["stage1"]["minutes"]
        logged.update({f"final/baseline_{k}": v
                       for k, v in two["baseline"].get("val", {}).items()})
    ledger = summary.get("ledger")
    if ledger:  # the run's cost (search.engine.ledger)
        logged.update({f"final/cost_{part}_{unit}": ledger[part][unit]
                       for part in ("search", "final", "total") for unit in ("gpu_hours", "cpu_hours")})
    gain = summary.get("gain") or {}
    for split in ("val", "test"):  # what the search bought: defaults, members, bag, gains
        if split in gain:
            s = gain[split]
            logged[f"final/{split}_defaults_mean"] = s["defaults"]["mean"]
            logged[f"final/{split}_defaults_std"] = s["defaults"]["std"]
            for key in ("members", "best_member", "bag"):
                logged.update({f"final/{split}_{key}_{k}": s[key][k]
                               for k in ("value", "gain", "low", "high")})
            logged.update({f"final/{split}_bag_over_best_member_{k}": v
                           for k, v in s["bag_over_best_member"].items()})
    if summary.get("per_label"):
        logged["final/per_label"] = wandb.Table(dataframe=pd.DataFrame(summary["per_label"]))
    if summary["submission"]:
        logged["final/submission"] = wandb.Table(dataframe=pd.read_csv(
            run_dir / summary["submission"]))
    if summary.get("localisation") and summary["localisation"].get("images"):
        logged.update({f"final/localisation_{k}": v for k, v in summary["localisation"].items()})
    front_file = run_dir / "best" / "pareto.json"
    if front_file.is_file():  # --objectives: the front, the members marked
        members = {m["trial_id"] for m in summary["members"]}
        logged["final/pareto"] = wandb.Table(dataframe=pd.DataFrame(
            [{"trial_id": r["trial_id"], "member": r["trial_id"] in members, **r["objectives"]}
             for r in json.loads(front_file.read_text())]))
        if (report / "pareto.png").is_file():
            logged["final/pareto_figure"] = wandb.Image(str(report / "pareto.png"))
    run.log(logged)
    run.finish()
    return f"W&B: final run logged {'online' if online else 'offline, in ' + str(run_dir / 'wandb')}"
