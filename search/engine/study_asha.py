"""ASHA on the study: asynchronous successive halving whose rung values are the study's
intermediate values (medtune's searcher writes every epoch there; in a multi-objective study
the trial's `curve`), so that it can count what
Ray's ASHAScheduler cannot be given by public means:
- a warm-started search's prior trials, where their curves are comparable
  (`search.engine.warmstart`): their rung values join the cutoffs, so poor trials stop sooner;
- a reproducible search's batches (`search.engine.reproducible`): a trial's cutoffs come from the
  trials of earlier batches only.
Otherwise it decides as Ray's ASHAScheduler does: rungs at grace_period * rf ** k up to
max_t, and at a rung a trial stops when its value is worse than the 1 - 1/rf quantile of the
values recorded there (here: every other trial's at that epoch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.engine.binding import bound
from search.engine.searcher import RAY_TRIAL_ATTR, curve_of
from trainables.tasks import better, sign

PRIOR_ATTR = "prior"  # user attribute of a warm start's prior trial: RUN/TRIAL it came from
COMPARABLE_ATTR = "prior_comparable"  # its curves can count in ASHA's cutoffs


def rungs(grace_period: int, max_t: int, reduction_factor: float) -> list[int]:
    """ASHA's milestones: grace_period * reduction_factor ** k, up to max_t."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [int(grace_period * reduction_factor ** k) for k in range(count)]


class StudyASHA(FIFOScheduler):
    """ASHA whose rung values are read from the study (module docstring); with `batch`, a
    trial's cutoffs come from earlier batches only."""

    def __init__(self, *, metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: float, study_name: str, study_url: str,
                 batch: int | None = None) -> None:
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
        return TrialScheduler.STOP if better(cutoff, value, self.mode) else \
            TrialScheduler.CONTINUE

    def cutoff(self, trial_id: str, rung: int) -> float | None:
        """The cutoff at `rung` for a trial: from comparable prior trials and this search's
        other trials (with batches: those of the batches before its own)."""
        binding = bound(self.study_name)
        url = binding.study_url if binding is not None else self.study_url
        trials = optuna.load_study(study_name=self.study_name, storage=url).get_trials(
            deepcopy=False)
        own = [t for t in trials if not t.user_attrs.get(PRIOR_ATTR)]
        index = next((i for i, t in enumerate(own)
                      if t.user_attrs.get(RAY_TRIAL_ATTR) == trial_id), None)
        if index is None:
            return None
        others = own[: index // self.batch * self.batch] if self.batch else \
            own[:index] + own[index + 1:]
        counted = others + [t for t in trials if t.user_attrs.get(COMPARABLE_ATTR)]
        recorded = [curve[rung] for curve in map(curve_of, counted) if rung in curve]
        if not recorded:
            return None
        # the value that the best 1 / rf of them reach: by the mode's sign, the same quantile
        s = sign(self.mode)
        return float(s * np.nanpercentile(s * np.asarray(recorded), (1 - 1 / self.rf) * 100))

    def debug_string(self) -> str:
        return f"StudyASHA: rungs {self.rungs}" + (f", batches of {self.batch}" if self.batch
                                                   else "")
