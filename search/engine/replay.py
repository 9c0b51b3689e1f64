"""The replay backend: recorded learning curves served through the real search, in simulated
time (`python -m search.run EXPERIMENT --replay TABLE`; `python -m search.bench replay`).

Multi-fidelity search is judged on tabular and surrogate benchmarks (HPOBench, LCBench,
YAHPO Gym; Syne Tune replays asynchronous searches in simulated time). Here a learning-curve
table (`search.bench collect`) stands in for training: a surrogate fitted on it answers any
configuration the sampler proposes with a whole curve, and a trial of the replay trainable
reports that curve epoch by epoch through everything `search.run` uses (the Optuna study and
sampler, Ray Tune, ASHA, the callbacks, the run folder). Each epoch sleeps its recorded
seconds times a scale (a median epoch: `REPLAY_EPOCH_SECONDS`), so the order in which results
reach the sampler and the scheduler follows the recorded costs; each result carries the
epoch's recorded seconds (`sim/epoch_seconds`) and the moment it was reported
(`sim/clock`), from which `simulated_times` rebuilds the search's simulated clock.

The surrogate: a configuration the table recorded gets its own curve back (a tabular
benchmark); any other gets a random forest's (scikit-learn; YAHPO Gym and HPOBench's
surrogates are forests too): one forest for the metric's curve, the search's signal, and one
for the other columns (losses, seconds), each output scaled to unit variance so that seconds
do not outweigh the rest. Parameters are scaled to [0, 1] (in logs where the space samples in
logs), a categorical is one-hot. The forest's error on configurations it never saw is measured
by 5-fold cross-validation (`held_out_error`) and reported beside each replay.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search.engine.curves import Curves, read_curves

REPLAY_EPOCH_SECONDS = 0.05  # real seconds a median recorded epoch sleeps
FOLDS = 5
TREES = 200


class Encoder:
    """Configurations as points: each numeric parameter scaled to [0, 1] (in logs where it is
    sampled in logs), each categorical one-hot scaled so that two choices are 1 apart; a
    parameter a configuration lacks (a conditional one) at 0 with an indicator of 1."""

    def __init__(self, distributions: dict[str, Any], configs: list[dict[str, Any]]) -> None:
        self.distributions = dict(sorted(distributions.items()))
        self.conditional = sorted({name for name in self.distributions
                                   if any(name not in c for c in configs)})

    def __call__(self, params: dict[str, Any]) -> np.ndarray:
        from optuna.distributions import CategoricalDistribution

        out: list[float] = []
        for name, dist in self.distributions.items():
            value = params.get(name)
            if isinstance(dist, CategoricalDistribution):
                hot = [float(value is not None and value == choice) for choice in dist.choices]
                out += [h / math.sqrt(2) for h in hot]
                continue
            if value is None:
                out.append(0.0)
                continue
            low, high, v = float(dist.low), float(dist.high), float(value)
            if getattr(dist, "log", False):
                low, high, v = math.log(low), math.log(high), math.log(v)
            out.append((v - low) / (high - low) if high > low else 0.0)
        out += [float(name not in params) for name in self.conditional]
        return np.array(out)


def _forest() -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=TREES, min_samples_leaf=2, random_state=0)


@dataclass
class Surrogate:
    """Whole curves (each served column over the table's epochs) for any configuration."""

    encoder: Encoder
    columns: list[str]  # the metric first, then val/loss and the other recorded columns
    epochs: int
    recorded: dict[str, np.ndarray]  # a recorded configuration (its key) -> its curves
    metric_model: Any  # forest: configuration -> the metric's curve
    other_model: Any  # forest: configuration -> the other columns, scaled
    other_scale: tuple[np.ndarray, np.ndarray]  # their mean and std
    median_seconds: float  # of a recorded epoch

    def predict(self, params: dict[str, Any]) -> dict[str, np.ndarray]:
        values = self.recorded.get(config_key(params, self.encoder.distributions))
        if values is None:
            x = self.encoder(params)[None, :]
            mean, std = self.other_scale
            values = np.concatenate([self.metric_model.predict(x)[0],
                                     self.other_model.predict(x)[0] * std + mean])
        return {c: values[i * self.epochs:(i + 1) * self.epochs]
                for i, c in enumerate(self.columns)}


def config_key(params: dict[str, Any], distributions: dict[str, Any]) -> str:
    """The searched values of a configuration, as one string (a recorded one is looked up)."""
    return json.dumps({k: params[k] for k in sorted(distributions) if k in params},
                      sort_keys=True)


def _targets(curves: Curves) -> tuple[list[str], np.ndarray]:
    columns = [curves.metric, *sorted(c for c in curves.frame.columns
                                      if c.startswith(("val/", "train/loss"))
                                      and c != curves.metric), "seconds"]
    columns = [c for c in columns if curves.frame[c].notna().all()]
    return columns, np.hstack([curves.matrix(c) for c in columns])


def fit_surrogate(curves: Curves) -> Surrogate:
    """The surrogate of a table: its recorded curves, and forests for everything else."""
    configs = curves.configs()["params"].tolist()
    encoder = Encoder(curves.distributions(), configs)
    x = np.stack([encoder(c) for c in configs])
    columns, y = _targets(curves)
    split = curves.epochs  # the metric's curve comes first
    others = y[:, split:]
    mean, std = others.mean(axis=0), others.std(axis=0)
    std[std == 0] = 1.0
    recorded = {config_key(c, encoder.distributions): row for c, row in zip(configs, y, strict=True)}
    return Surrogate(encoder, columns, curves.epochs, recorded,
                     _forest().fit(x, y[:, :split]), _forest().fit(x, (others - mean) / std),
                     (mean, std), float(np.median(curves.frame["seconds"])))


def held_out_error(curves: Curves, *, seed: int = 0) -> dict[str, Any]:
    """5-fold cross-validation over configurations of the metric's forest: the mean absolute
    error of a held-out configuration's best value (what a search is after) and of its last
    epoch's, the rank correlation of the best values, and, to read them against, the error of
    always answering the median best."""
    from scipy.stats import spearmanr
    from sklearn.model_selection import KFold

    configs = curves.configs()["params"].tolist()
    encoder = Encoder(curves.distributions(), configs)
    x = np.stack([encoder(c) for c in configs])
    metric = curves.matrix(curves.metric)
    true_best, folds = curves.best_of(metric), min(FOLDS, len(x))
    predicted = np.zeros_like(metric)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(x):
        predicted[test] = _forest().fit(x[train], metric[train]).predict(x[test])
    best = curves.best_of(predicted)
    return {"configs": len(x), "folds": folds,
            "mae_best": float(np.abs(best - true_best).mean()),
            "mae_last": float(np.abs(predicted[:, -1] - metric[:, -1]).mean()),
            "spearman_best": float(spearmanr(best, true_best).statistic),
            "mae_best_of_the_median": float(np.abs(true_best - np.median(true_best)).mean())}


QUANTILES = (10, 25, 50, 75, 90)


def landscape(curves: Curves) -> dict[str, Any]:
    """How much the choice matters in a table: percentiles of a configuration's last-epoch
    value, the best value recorded, and how well each epoch's value ranks the configurations
    by their best (Spearman; what an early stop at that epoch goes by)."""
    from scipy.stats import spearmanr

    metric = curves.matrix(curves.metric)
    best = curves.best_of(metric)
    return {"configs": len(metric), "best": curves.best(),
            "last_percentiles": {q: float(np.quantile(metric[:, -1], q / 100)) for q in QUANTILES},
            "rank_by_epoch": [float(spearmanr(metric[:, e], best).statistic)
                              for e in range(metric.shape[1])]}


@functools.lru_cache(maxsize=4)
def _surrogate(path: str, mtime: float) -> Surrogate:
    return fit_surrogate(read_curves(path))


def load_surrogate(path: str | Path) -> Surrogate:
    """The table's surrogate, fitted once per process and table version."""
    path = Path(path)
    return _surrogate(str(path.resolve()), path.stat().st_mtime)


def replay_trainable(config: dict[str, Any], surrogate: Surrogate, metric: str,
                     time_scale: float) -> None:
    """Ray Tune function trainable: the configuration's curve, an epoch at a time, each after
    its recorded seconds times `time_scale`. No checkpoints: nothing to resume but the epoch,
    and a retried trial replays its curve from the start."""
    from ray import tune

    curve = surrogate.predict(config)
    epochs = min(int(config["epochs"]), surrogate.epochs)
    for epoch in range(epochs):
        seconds = float(curve["seconds"][epoch])
        time.sleep(max(0.0, seconds * time_scale))
        result = {c: float(v[epoch]) for c, v in curve.items() if c != "seconds"}
        tune.report({**result, metric: float(curve[metric][epoch]), "epoch": epoch + 1,
                     "lr": float(config.get("lr", 0.0)), "sim/epoch_seconds": seconds,
                     "sim/clock": time.time()})


def simulated_times(epochs: pd.DataFrame, workers: int,
                    batch_of: dict[str, int] | None = None) -> pd.Series:
    """Each epoch's end on the simulated clock (seconds from the search's start): trials take
    the first free one of `workers` in the order they started (by their first report), and an
    epoch ends its recorded seconds after the one before it. With `batch_of` (a reproducible
    search's batch of each trial), a trial starts no sooner than every trial of the batches
    before its own has ended."""
    order = epochs.sort_values("sim/clock").drop_duplicates("trial_id")["trial_id"]
    free = [0.0] * workers
    ends = pd.Series(index=epochs.index, dtype=float)
    batch_end: dict[int, float] = {}  # batch -> when its last trial ended
    for trial_id in order:
        rows = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
        w = int(np.argmin(free))
        clock = free[w]
        if batch_of is not None:
            batch = batch_of[trial_id]
            clock = max([clock, *(end for b, end in batch_end.items() if b < batch)])
        for index, seconds in rows["sim/epoch_seconds"].items():
            clock += float(seconds)
            ends[index] = clock
        free[w] = clock
        if batch_of is not None:
            batch_end[batch_of[trial_id]] = max(batch_end.get(batch_of[trial_id], 0.0), clock)
    return ends
