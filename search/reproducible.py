"""`--reproducible`: the same search from the same seed, whatever the concurrency or the order
in which trials finish.

A seeded sampler alone does not give that (ray-project/ray#13616): what it proposes next
depends on which trials have finished when it is asked, and ASHA's stops depend on which
trials reached a rung first. So:
- the searcher asks configurations in fixed batches (`--reproducible N`, default 4), the next
  batch once every trial of the ones before it has ended (`search.searcher`); the trials of a
  batch run side by side, up to the concurrency;
- ASHA's cutoff at a rung comes from the trials of earlier batches only (read from the study),
  never from trials of the same batch, so a trial's stop does not depend on what ran beside it.
  The first batch has no earlier trials: none of it is stopped.
With deterministic training (the CPU, one thread per trial) the numbers repeat too. The cost:
slots stand idle at the end of each batch while its last trials finish (printed at the end of
the run, and `python -m search.bench reproducible` measures it against a free-running search).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.binding import bound
from search.searcher import RAY_TRIAL_ATTR

DEFAULT_BATCH = 4


def rungs(grace_period: int, max_t: int, reduction_factor: float) -> list[int]:
    """ASHA's milestones: grace_period * reduction_factor ** k, up to max_t."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [int(grace_period * reduction_factor ** k) for k in range(count)]


class BatchASHA(FIFOScheduler):
    """Asynchronous successive halving whose cutoffs come from earlier batches (module
    docstring): at a rung, a trial stops when its value is worse than the 1 - 1/rf quantile of
    the values earlier batches' trials reached there."""

    def __init__(self, *, metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: float, batch: int, study_name: str, study_url: str) -> None:
        super().__init__()
        self._metric, self.mode = metric, mode  # TrialScheduler's `metric` reads _metric
        self.rungs = rungs(min(grace_period, max_t), max_t, reduction_factor)
        self.rf, self.batch = reduction_factor, batch
        self.study_name, self.study_url = study_name, study_url
        self.decided: dict[str, set[int]] = {}  # trial id -> rungs it has passed or stopped at

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # its own metric and mode (the driver sets them)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        step = int(result.get("epoch") or result.get("training_iteration") or 0)
        decided = self.decided.setdefault(trial.trial_id, set())
        due = [r for r in self.rungs if r <= step and r not in decided]
        value = result.get(self.metric)
        if not due or value is None:
            return TrialScheduler.CONTINUE
        decided.update(due)
        cutoff = self.cutoff(trial.trial_id, max(due))
        if cutoff is None:
            return TrialScheduler.CONTINUE
        worse = value < cutoff if self.mode == "max" else value > cutoff
        return TrialScheduler.STOP if worse else TrialScheduler.CONTINUE

    def cutoff(self, trial_id: str, rung: int) -> float | None:
        """The cutoff at `rung` for a trial: from the trials of the batches before its own."""
        binding = bound(self.study_name)
        url = binding.study_url if binding is not None else self.study_url
        trials = optuna.load_study(study_name=self.study_name, storage=url).get_trials(
            deepcopy=False)
        number = next((t.number for t in trials if t.user_attrs.get(RAY_TRIAL_ATTR) == trial_id),
                      None)
        if number is None:
            return None
        first = number // self.batch * self.batch
        recorded = [t.intermediate_values[rung] for t in trials
                    if t.number < first and rung in t.intermediate_values]
        if not recorded:
            return None
        quantile = (1 - 1 / self.rf) if self.mode == "max" else 1 / self.rf
        return float(np.nanpercentile(recorded, quantile * 100))

    def debug_string(self) -> str:
        return f"BatchASHA: rungs {self.rungs}, batches of {self.batch}"


def idle_share(trials: Any, slots: int) -> float | None:
    """The share of the search's trial slots (concurrency x wall time) that stood idle."""
    ran = trials.dropna(subset=["started", "finished"])
    if not len(ran) or slots < 1:
        return None
    wall = float(ran["finished"].max() - ran["started"].min())
    busy = float((ran["finished"] - ran["started"]).sum())
    return max(0.0, 1 - busy / (slots * wall)) if wall > 0 else None
