"""medtune's searcher: Optuna's ask-and-tell behind Ray Tune's public `Searcher` interface.

What the study holds (what optuna-dashboard shows, and what TPE models):
- a trial per Ray Tune trial, numbered in the order they were suggested; the Ray trial id is
  its user attribute `ray_trial`;
- every reported epoch as an intermediate value (step: the epoch);
- a trial that ran its full length: COMPLETE, valued by its best epoch (the value medtune ranks
  trials by, `search.engine.run_folder.rank_trials`);
- a trial that ASHA stopped before its length: PRUNED, with its epochs as intermediate values
  (Optuna gives it its last epoch's value; TPE ranks pruned trials after complete ones, by
  their last step and value);
- a trial that errored, or reported no value: FAIL (Ray's own OptunaSearch records an errored
  trial COMPLETE with its last value: a NaN would look like a score).
So the study's best trial is `best/config.json`'s, in optuna-dashboard as in the report.
With `--objectives` (search.engine.objectives) the study has several directions and no intermediate
values (a trial's user attribute `curve` holds its epochs, written as they come); with
`--reproducible` (search.engine.reproducible) configurations are asked in batches.

Only public APIs: Ray Tune's `Searcher` methods, Optuna's `create_study`/`load_study`,
`Study.ask`/`Study.tell` (by trial number) and its storage's documented `BaseStorage` methods
for an intermediate value of a trial asked before a restore. The searcher's saved state is the
study's name and URL, the trial numbers and the sampler (its random state goes on), never a
database connection: a restored searcher reopens the study where the restoring driver keeps it
(`search.engine.binding`), else at the URL it saved.
"""

from __future__ import annotations

import logging
import math
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import optuna
from ray.tune.search import Searcher

from search.engine.binding import bound
from search.engine.storage import STUDY_FILE, snapshot_sqlite
from trainables.tasks import best, direction

log = logging.getLogger(__name__)

RAY_TRIAL_ATTR = "ray_trial"  # the study trial's user attribute: the Ray Tune trial it is
CURVE_ATTR = "curve"  # a multi-objective study's trial: its first objective by epoch


def curve_of(trial: optuna.trial.FrozenTrial) -> dict[int, float]:
    """A study trial's value by epoch (the experiment's metric): its intermediate values, or
    in a multi-objective study, which holds none, its user attribute `curve`."""
    if trial.intermediate_values:
        return dict(trial.intermediate_values)
    return {int(e): float(v) for e, v in (trial.user_attrs.get(CURVE_ATTR) or {}).items()}


def make_sampler(seed: int, startup_trials: int) -> optuna.samplers.TPESampler:
    """TPE with every default that changed between Optuna releases passed explicitly."""
    with warnings.catch_warnings():  # `group` is marked experimental; it is what a
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # conditional space needs
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup_trials, multivariate=True, group=True,
            constant_liar=True)


def trial_length(config: dict[str, Any], max_epochs: int) -> int:
    """A trial's own length: its phases' epochs can be searched, and sum to less than the
    budget's."""
    from trainables.errors import ConfigError
    from trainables.train.config import TrainConfig

    try:
        return min(max_epochs, TrainConfig.from_dict(config).epochs)
    except ConfigError:
        return max_epochs


def study_directions(mode: str, objectives: Sequence[Sequence[str]] | None = None
                     ) -> list[Literal["maximize", "minimize"]]:
    """The study's directions: the experiment's mode, or each objective's ((metric, mode)
    pairs) in a search on several."""
    return [direction(m) for m in ([m for _, m in objectives] if objectives else [mode])]


def best_of(values: dict[int, float], mode: str) -> float:
    return best(values.values(), mode)


class StudySearcher(Searcher):
    """Suggests each Ray Tune trial's configuration from an Optuna study and tells the study
    every epoch and how the trial ended (module docstring)."""

    def __init__(self, space: Any, *, metric: str, mode: str, study_name: str, study_url: str,
                 sampler: optuna.samplers.BaseSampler, max_epochs: int,
                 snapshot: Path | None = None, batch: int | None = None,
                 num_samples: int | None = None,
                 objectives: list[tuple[str, str]] | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.space = space  # define-by-run: fn(trial) -> constants or None, module-level
        self.study_name, self.study_url = study_name, study_url
        self.sampler, self.max_epochs = sampler, max_epochs
        # a SQLite study that must travel with Ray's experiment state: copied beside each
        # searcher checkpoint (Ray uploads both together)
        self.snapshot = snapshot
        # --reproducible: configurations asked `batch` at a time, each batch once every trial
        # of the ones before it has ended (search.engine.reproducible)
        self.batch, self.num_samples = batch, num_samples
        self.numbers: dict[str, int] = {}  # Ray trial id -> study trial number
        self.pending: dict[int, dict[str, Any]] = {}  # asked, not yet handed to Ray (batches)
        self.ended: set[int] = set()  # trial numbers told how they ended
        # --objectives: (metric, mode) each, the first `metric`'s (search.engine.objectives); a trial's
        # epochs are kept here (a multi-objective study holds no intermediate values)
        self.objectives = objectives
        self.curves: dict[int, dict[int, dict[str, float]]] = {}
        self._study: optuna.Study | None = None
        self._storage: optuna.storages.RDBStorage | None = None
        self._keys: dict[int, int] = {}  # trial number -> the storage's key for the trial

    # --- the study ---------------------------------------------------------------------------
    def study(self) -> optuna.Study:
        if self._study is None:
            self._storage = optuna.storages.RDBStorage(self.study_url)
            self._study = optuna.create_study(
                study_name=self.study_name, storage=self._storage, sampler=self.sampler,
                directions=study_directions(self.mode, self.objectives),
                load_if_exists=True)
        return self._study

    def _stored(self, number: int) -> tuple[optuna.storages.RDBStorage, int]:
        """The storage and its key for a trial number (Optuna's `BaseStorage` methods: a
        trial asked by the driver before a restore has no `Trial` object here)."""
        self.study()
        assert self._storage is not None
        if number not in self._keys:
            study = self._storage.get_study_id_from_name(self.study_name)
            self._keys[number] = self._storage.get_trial_id_from_study_id_trial_number(
                study, number)
        return self._storage, self._keys[number]

    def _report(self, number: int, result: dict[str, Any]) -> None:
        """The result's epoch in the study trial: an intermediate value, or in a
        multi-objective study a point of its `curve` (a resumed trial that trains an epoch
        again overwrites it)."""
        value = result.get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return
        step = int(result.get("epoch") or result.get("training_iteration") or 0)
        storage, key = self._stored(number)
        try:
            if not self.objectives:
                storage.set_trial_intermediate_value(key, step, float(value))
                return
            row = {k: float(result[k]) for k, _ in self.objectives if result.get(k) is not None}
            if len(row) == len(self.objectives) and all(map(math.isfinite, row.values())):
                # the first objective's curve goes to the study as it grows (StudyASHA reads it)
                self.curves.setdefault(number, {})[step] = row
                storage.set_trial_user_attr(key, CURVE_ATTR, self._curve(number))
        except optuna.exceptions.UpdateFinishedTrialError as e:  # marked failed on a resume
            log.warning("optuna: trial %s: %s", number, e)

    def _curve(self, number: int) -> dict[str, float]:
        assert self.objectives is not None
        first = self.objectives[0][0]
        return {str(e): r[first] for e, r in sorted(self.curves.get(number, {}).items())}

    # --- Ray Tune's Searcher interface -------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # metric, mode and space are this searcher's own (the driver sets them)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.batch is None:
            number, config = self._ask()
        elif self.pending or self._ask_next_batch():
            number = min(self.pending)
            config = self.pending.pop(number)
        else:  # the batch before is still running: Ray asks again later
            return None
        storage, key = self._stored(number)
        storage.set_trial_user_attr(key, RAY_TRIAL_ATTR, trial_id)
        self.numbers[trial_id] = number
        return config

    def _ask(self) -> tuple[int, dict[str, Any]]:
        trial = self.study().ask()
        constants = self.space(trial) or {}
        return trial.number, {**trial.params, **constants}  # flat keys: a trial config's own

    def _ask_next_batch(self) -> bool:
        """Ask the next batch's configurations, once every trial handed out has ended: the
        sampler then sees the same finished trials, whatever the concurrency and the order in
        which they finished."""
        assert self.batch is not None
        if not set(self.numbers.values()) <= self.ended:
            return False
        left = self.batch if self.num_samples is None else \
            min(self.batch, self.num_samples - len(self.numbers))
        for _ in range(max(left, 0)):
            number, config = self._ask()
            self.pending[number] = config
        return bool(self.pending)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.numbers:
            self._report(self.numbers[trial_id], result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        """Ray hands a trial's last result only here (not to on_trial_result)."""
        number = self.numbers.get(trial_id)
        if number is None:  # suggested by a driver whose saved state did not list it
            return
        self.ended.add(number)
        if result:
            self._report(number, result)
        storage, key = self._stored(number)
        trial = storage.get_trial(key)
        if trial.state.is_finished():  # marked failed on a resume, or told already
            return
        if self.objectives:
            self._tell_objectives(number, result, error)
            return
        values = trial.intermediate_values
        if error or not values:
            self.study().tell(number, state=optuna.trial.TrialState.FAIL)
        elif max(values) >= trial_length((result or {}).get("config") or {}, self.max_epochs):
            self.study().tell(number, best_of(values, self.mode))
        else:  # stopped by the scheduler before its length
            self.study().tell(number, state=optuna.trial.TrialState.PRUNED)

    def _tell_objectives(self, number: int, result: dict | None, error: bool) -> None:
        """A multi-objective trial: every objective at its best epoch by the first, or PRUNED
        (no values: Optuna's samplers cannot rank a pruned trial of such a study by its steps),
        or FAIL; the first objective's curve as the user attribute `curve`."""
        assert self.objectives is not None
        study, rows = self.study(), self.curves.get(number, {})
        storage, key = self._stored(number)
        first = self.objectives[0][0]
        storage.set_trial_user_attr(key, CURVE_ATTR, self._curve(number))
        if error or not rows:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        elif max(rows) >= trial_length((result or {}).get("config") or {}, self.max_epochs):
            top = best_of({e: r[first] for e, r in rows.items()}, self.objectives[0][1])
            epoch = min(e for e, r in rows.items() if r[first] == top)
            study.tell(number, [rows[epoch][k] for k, _ in self.objectives])
        else:
            study.tell(number, state=optuna.trial.TrialState.PRUNED)

    # --- save and restore --------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"study_name": self.study_name, "study_url": self.study_url,
                "numbers": dict(self.numbers), "sampler": self.sampler,
                "pending": dict(self.pending), "ended": set(self.ended),
                "curves": {n: dict(c) for n, c in self.curves.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        self.study_name, self.numbers = state["study_name"], dict(state["numbers"])
        self.sampler = state["sampler"]
        self.pending, self.ended = dict(state["pending"]), set(state["ended"])
        self.curves = dict(state.get("curves") or {})
        binding = bound(self.study_name)
        if binding is not None:  # where the restoring driver keeps the study
            self.study_url, self.snapshot = binding.study_url, binding.snapshot
        else:
            self.study_url = state["study_url"]
        self._study, self._storage, self._keys = None, None, {}
        from trainables.errors import ConfigError

        try:
            study = optuna.load_study(study_name=self.study_name, storage=self.study_url)
        except KeyError:
            raise ConfigError(f"--resume: the study {self.study_name} is not in "
                              f"{self.study_url}") from None
        except Exception as e:  # a database that cannot be opened (any driver's errors)
            raise ConfigError(f"--resume: the study {self.study_name} is not in "
                              f"{self.study_url}: {str(e).splitlines()[0]}") from None
        # the study may have been saved after this state (search.engine.driver.LiveLimiter):
        # trials it lists that this state does not are this searcher's all the same. Not with
        # --reproducible: a batch waits for every trial handed out, and one Ray lost never ends
        for trial in study.get_trials(deepcopy=False) if self.batch is None else []:
            ray_id = trial.user_attrs.get(RAY_TRIAL_ATTR)
            if ray_id and ray_id not in self.numbers:
                self.numbers[ray_id] = trial.number
                if trial.state.is_finished():
                    self.ended.add(trial.number)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)
        if self.snapshot is not None and self.snapshot.is_file():
            snapshot_sqlite(self.snapshot, Path(checkpoint_path).parent / STUDY_FILE)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles the searcher into tuner.pkl
        return {**self.__dict__, "_study": None, "_storage": None, "_keys": {}}


class FixedSpace:
    """An experiment's define-by-run space with some keys fixed by `--set`: their suggest_*
    calls answer the fixed value without asking Optuna (so conditions still follow it).
    A module-level class, so the searcher pickles (a closure would not)."""

    def __init__(self, space: Any, fixed: dict[str, Any]) -> None:
        self.space, self.fixed = space, dict(fixed)

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        # a space may return constants that follow its choices (a demo model's weights)
        return self.space(_FixingTrial(trial, self.fixed))


class _FixingTrial:
    def __init__(self, trial: Any, fixed: dict[str, Any]) -> None:
        self._trial, self._fixed = trial, fixed

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._trial, name)
        if not name.startswith("suggest_"):
            return attr

        def suggest(key: str, *args: Any, **kwargs: Any) -> Any:
            return self._fixed[key] if key in self._fixed else attr(key, *args, **kwargs)

        return suggest
