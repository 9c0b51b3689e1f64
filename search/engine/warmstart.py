"""`--warm-start RUN [RUN ...]`: a search that starts from what earlier searches learnt.

Neither Ray Tune (`points_to_evaluate` is ignored with a define-by-run space, ray#35319; an old
experiment cannot be loaded into a searcher, ray#18847) nor W&B sweeps (wandb#8521) can do
this; Optuna can, by hand. Before the first trial, each earlier run's finished trials (its
study: a run folder or an object-store URI, of this or another experiment, on this or other
data) are fitted to today's space and added to the study as prior trials (Optuna's public
`add_trial`, user attribute `prior`: EXPERIMENT/RUN/TRIAL):
- a value outside today's range is clipped into it, a choice that no longer exists (or a value
  today's space asks for that the trial lacks) drops the trial; one line says which;
- a trial scored on another metric is dropped (its value means something else);
- a full-length trial comes in COMPLETE with its best epoch's value, one ASHA stopped PRUNED,
  each with its epochs as intermediate values; failed trials are left out;
- the best `first` distinct configurations (full-length ones first) of runs on other data
  (or of another experiment, or another number of epochs) are tried first on this data
  (`enqueue_trial`); a run on the same data, experiment and epochs has measured its
  configurations here already, so none of them is run again.
Priors are never this run's trials: not in its Ray Tune experiment, its count or its best
(`best/`); trials.parquet lists them with status "prior", the report draws them apart, W&B
gets them as one table.

Where the earlier run searched the same experiment on the same data with the same number of
epochs, its learning curves are comparable: ASHA's cutoffs then count their rung values too
(`search.engine.study_asha.StudyASHA`), so poor trials stop sooner.

Into a search on several objectives (`--objectives`), a full-length trial comes as a prior only
from a run on the same objectives (its values are today's); one of another run never measured
today's other objectives, so it is left out of the priors and, ranked by the experiment's
metric, its configuration can be among those tried first (on any data). Stopped trials need no
values and come in PRUNED either way, their epochs in the user attribute `curve`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from search.engine.searcher import CURVE_ATTR, best_of, curve_of
from search.engine.spec import RunSpec
from search.engine.storage import CONFIG_FILE, STUDY_FILE, RunStore
from search.engine.study_asha import COMPARABLE_ATTR, PRIOR_ATTR
from trainables.errors import ConfigError
from trainables.tasks import sign

log = logging.getLogger(__name__)

State = optuna.trial.TrialState


class _Drop(Exception):
    """A prior trial that does not fit today's space (the message says why)."""


class FittingTrial:
    """A trial that answers a define-by-run space from an earlier trial's values, each fitted
    into today's distribution; `pinned` keys answer their fixed value (not searched)."""

    def __init__(self, params: dict[str, Any], pinned: dict[str, Any]) -> None:
        self.given, self.pinned = params, pinned
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, BaseDistribution] = {}
        self.clipped: list[str] = []

    def _value(self, name: str) -> Any:
        if name not in self.given:
            raise _Drop(f"it has no {name}")
        return self.given[name]

    def _keep(self, name: str, value: Any, distribution: BaseDistribution) -> Any:
        self.params[name], self.distributions[name] = value, distribution
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        if name in self.pinned:
            return self.pinned[name]
        given = float(self._value(name))
        value = min(max(given, low), high)
        if step:
            value = min(high, low + round((value - low) / step) * step)
        if not math.isclose(value, given, rel_tol=1e-12, abs_tol=0.0):
            self.clipped.append(f"{name} {given:g} -> {value:g}")
        return self._keep(name, value, FloatDistribution(low, high, step=step, log=log))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int:
        if name in self.pinned:
            return self.pinned[name]
        given = int(self._value(name))
        value = min(high, low + round((min(max(given, low), high) - low) / step) * step)
        if value != given:
            self.clipped.append(f"{name} {given} -> {value}")
        return self._keep(name, value, IntDistribution(low, high, step=step, log=log))

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        if name in self.pinned:
            return self.pinned[name]
        given = self._value(name)
        if given not in list(choices):
            raise _Drop(f"{name}={given!r} is not one of today's choices")
        return self._keep(name, given, CategoricalDistribution(list(choices)))


@dataclass
class Warmed:
    """What a warm start added: the lines to print, the prior trials, what was tried first."""

    lines: list[str] = field(default_factory=list)
    priors: list[dict[str, Any]] = field(default_factory=list)  # a row per prior trial
    first: list[dict[str, Any]] = field(default_factory=list)  # enqueued configurations


def read_earlier(location: str) -> tuple[dict[str, Any], optuna.Study]:
    """An earlier run's config.json and study (a run folder or an object-store URI)."""
    store = RunStore.of(location)
    store.pull()
    config, db = store.run_config("--warm-start"), store.local / STUDY_FILE
    if not db.is_file():
        raise ConfigError(f"--warm-start {location}: not a run folder (it needs {CONFIG_FILE} "
                          f"and {STUDY_FILE})")
    try:
        study = optuna.load_study(study_name=config["run_id"], storage=f"sqlite:///{db}")
    except KeyError:
        raise ConfigError(f"--warm-start {location}: {STUDY_FILE} holds no study "
                          f"{config['run_id']}") from None
    return config, study


def comparable(earlier: dict[str, Any], spec: RunSpec, experiment: str, fixed: dict[str, Any],
               max_epochs: int) -> bool:
    """Whether an earlier run's learning curves (its config.json and spec) can stand beside
    today's trials' epochs: the same experiment on the same data, trained as long (a
    schedule's epochs shape its curve)."""
    return (earlier.get("experiment") == experiment
            and spec.fixed.get("data") == fixed.get("data") and spec.max_epochs == max_epochs)


def prior_trial(trial: optuna.trial.FrozenTrial, fitted: FittingTrial, where: str,
                mode: str, *, same_curves: bool,
                multi: bool = False) -> optuna.trial.FrozenTrial:
    """The prior trial of an earlier one: COMPLETE with its best epoch's value, or PRUNED,
    with its epochs; in a multi-objective study (`multi`: the earlier trial's values are
    today's objectives') with every objective's value, its epochs as user attribute `curve`."""
    curve = curve_of(trial)
    attrs: dict[str, Any] = {PRIOR_ATTR: where, COMPARABLE_ATTR: same_curves}
    full = trial.state == State.COMPLETE
    if multi:
        attrs[CURVE_ATTR] = {str(e): v for e, v in sorted(curve.items())}
        return optuna.trial.create_trial(
            params=fitted.params, distributions=fitted.distributions, user_attrs=attrs,
            state=State.COMPLETE if full else State.PRUNED, values=trial.values if full else None)
    # a full-length trial is valued by its best epoch (a study of an older medtune kept its last)
    value = (best_of(curve, mode) if curve else trial.values[0]) if full else None
    return optuna.trial.create_trial(
        params=fitted.params, distributions=fitted.distributions, user_attrs=attrs,
        state=State.COMPLETE if full else State.PRUNED, value=value, intermediate_values=curve)

def warm_start(study: optuna.Study, runs: list[str], *, space: Any, pinned: dict[str, Any],
               experiment: str, metric: str, mode: str, fixed: dict[str, Any], max_epochs: int,
               first: int, objectives: list[list[str]] | None = None) -> Warmed:
    """Add the finished trials of `runs` to `study` as priors, and enqueue the best `first`
    (module docstring); `objectives`: today's, [metric, mode] each, in a multi-objective
    study."""
    out = Warmed()
    ranked: list[tuple[bool, float, dict[str, Any]]] = []
    for location in runs:
        earlier, old = read_earlier(location)
        spec = RunSpec.from_dict(earlier["settings"], f"--warm-start {location}/{CONFIG_FILE}")
        name = f"{earlier.get('experiment')}/{earlier.get('run_id')}"
        their_metric = _metric_of(earlier)
        if their_metric != metric:
            out.lines.append(f"warm start: {name} left out: it optimised {their_metric}, this "
                             f"search {metric}")
            continue
        same_curves = comparable(earlier, spec, experiment, fixed, max_epochs)
        # into a multi-objective study a full-length trial comes only with today's objectives
        valued = not objectives or [list(o) for o in spec.objectives] == [
            list(o) for o in objectives]
        added, dropped, clipped, unvalued = 0, [], [], 0
        for trial in old.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED)):
            if trial.user_attrs.get(PRIOR_ATTR):  # that run's own priors came from elsewhere
                continue
            fitted = FittingTrial(trial.params, pinned)
            try:
                space(fitted)
            except _Drop as e:
                dropped.append(f"trial {trial.number} ({e})")
                continue
            if fitted.clipped:
                clipped.append(f"trial {trial.number}: " + ", ".join(fitted.clipped))
            full, curve = trial.state == State.COMPLETE, curve_of(trial)
            value = best_of(curve, mode) if curve else float((trial.values or [0.0])[0])
            if full and not valued:  # its other objectives were never measured: it can
                unvalued += 1  # only be run again
                ranked.append((full, value, fitted.params))
                continue
            study.add_trial(prior_trial(trial, fitted, f"{name}/{trial.number}", mode,
                                        same_curves=same_curves, multi=bool(objectives)))
            added += 1
            out.priors.append({"prior_of": f"{name}/{trial.number}", **fitted.params,
                               "status": "prior", metric: value,
                               "prior_state": "completed" if full else "stopped early",
                               "epochs": max(curve, default=0)})
            if not same_curves:  # on this data its result is known: no need to run it again
                ranked.append((full, value, fitted.params))
        out.lines.append(
            f"warm start: {added} trial(s) of {name} added as priors"
            + (" (same experiment, data and epochs: their curves count in ASHA's cutoffs"
               + (")" if unvalued else ", and none is run again)") if same_curves and added
               else "")
            + (f"; {unvalued} full-length one(s) left out: that run did not measure this "
               "search's objectives (they can be among those tried first)" if unvalued else "")
            + (f"; {len(dropped)} left out: " + "; ".join(dropped) if dropped else "")
            + ("; clipped into today's ranges: " + "; ".join(clipped) if clipped else ""))
    ranked.sort(key=lambda r: (not r[0], -sign(mode) * r[1]))
    for _, value, params in ranked:  # the best distinct configurations (a prior with the
        if len(out.first) == first:  # same values is no reason to skip one: Optuna's
            break  # skip_if_exists would skip them all)
        if any(params == f["params"] for f in out.first):
            continue
        study.enqueue_trial(params, user_attrs={"tried_first": True})
        out.first.append({"params": params, metric: value})
    if out.first:
        out.lines.append(f"warm start: the best {len(out.first)} earlier configuration(s) are "
                         "tried first")
    return out


def _metric_of(earlier: dict[str, Any]) -> str | None:
    """The metric an earlier run searched: its experiment's."""
    from spaces import get_experiment

    try:
        return get_experiment(str(earlier.get("experiment"))).metric
    except ConfigError:
        return None


def log_priors(run_dir: Any, run_id: str, warmed: Warmed, *, online: bool) -> str:
    """The prior trials (and the configurations tried first) as one W&B run in the search's
    group, apart from its trials' runs."""
    import os

    import pandas as pd
    import wandb

    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "medtune"), group=run_id,
                     name=f"{run_id}-priors", job_type="priors", dir=str(run_dir.resolve()),
                     mode="online" if online else "offline", reinit="create_new")
    logged = {"priors/trials": wandb.Table(dataframe=pd.DataFrame(warmed.priors).astype(str))}
    if warmed.first:
        logged["priors/tried_first"] = wandb.Table(dataframe=pd.DataFrame(
            [{**f["params"], **{k: v for k, v in f.items() if k != "params"}}
             for f in warmed.first]).astype(str))
    run.log(logged)
    run.finish()
    return f"W&B: the {len(warmed.priors)} prior trial(s) logged as run {run_id}-priors"


def prior_rows(study_url: str, study_name: str, searched: list[str], metric: str,
               mode: str, objectives: list[str] | None = None) -> list[dict[str, Any]]:
    """trials.parquet's rows of a warm start's priors (status "prior"), from the study; in a
    multi-objective one, with each of the `objectives`' values of a full-length prior."""
    study = optuna.load_study(study_name=study_name, storage=study_url)
    rows = []
    for t in study.get_trials(deepcopy=False):
        where = t.user_attrs.get(PRIOR_ATTR)
        if not where:
            continue
        values = curve_of(t)
        best = best_of(values, mode) if values else (t.values or [None])[0]
        epoch = next((e for e, v in values.items() if v == best), None) if values else None
        valued = dict(zip(objectives, t.values, strict=True)) if objectives and t.values else {}
        rows.append({"trial_id": f"prior:{where}", **{k: t.params.get(k) for k in searched},
                     "status": "prior", **valued, metric: best, "best_epoch": epoch,
                     "epochs": max(values, default=0), "prior_of": where,
                     "prior_state": "completed" if t.state == State.COMPLETE
                     else "stopped early"})
    return rows
