"""W&B logging of a search: one W&B run per trial, all written by one logging actor.

Ray's `WandbLoggerCallback` starts two actors per trial (a queue and a logger, each a new
process, and the logger's `wandb.init` a W&B service process of its own) and hands each
result over with a blocking `ray.get`. On 2 cores that cost a tiny trial 1.7 s
(`python -m search.bench overhead`), and the driver, which handles results one at a time,
waited 1.3-1.6 s per result. Here one actor, started once per search on the driver's node,
keeps every trial's run open side by side (`wandb.init(reinit="create_new")`); the driver
sends it each result without waiting (calls from one caller run in order), and waits only at
the experiment's end, for the runs to finish.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import ray
from ray import tune

log = logging.getLogger(__name__)

FINISH_TIMEOUT_S = 600.0  # the runs' last writes (uploads, online) at the experiment's end
NOT_LOGGED = ("config", "trial_id", "node_id", "training_iteration")


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
