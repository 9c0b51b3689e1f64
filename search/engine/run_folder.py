"""The run folder's tables and best configurations, written from Ray Tune's results.

`trials.parquet`: a row per trial (trial_id, every searched value, status, best metric, its
epoch, epochs run, seconds, the Ray node and node type of its last epoch, error text, the
GPU- and CPU-hours it held: search.engine.ledger). `epochs.parquet`: a row
per trial and epoch (with the node that ran it; an epoch trained again after a resume keeps its
last row; epochs a lagging copy of Ray's log lacks come from the study: `_with_lagged_epochs`).
`best/config.json` and `best/top_k.json`: the inputs of `search.reproduce` and of the final step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from search.engine.driver import SearchPlan
from search.engine.ledger import with_costs
from search.engine.searcher import RAY_TRIAL_ATTR, curve_of, trial_length
from trainables.tasks import sign
from trainables.train.config import TrainConfig, config_value

METRIC_PREFIXES = ("train/", "val/", "sim/", "model/")  # sim/: a replayed search's simulated
# clock; model/: what the model costs (--objectives latency, params)


def _error_text(error: BaseException | None) -> str | None:
    """The line that says what went wrong (Ray wraps the trial's exception in a traceback)."""
    if error is None:
        return None
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    named = [ln for ln in lines if "Error:" in ln or "Exception:" in ln]
    return (named[-1] if named else lines[-1] if lines else type(error).__name__)[:2000]


def collect(plan: SearchPlan, results: tune.ResultGrid) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) tables of every trial Ray Tune knows of."""
    metric, mode = plan.experiment.metric, plan.experiment.mode
    searched = list(plan.experiment.searched)
    trial_rows, epoch_frames = [], []
    curves, curve_key = study_curves(plan), plan.objectives[0][0] if plan.objectives else metric
    for result in _each(results):
        config = result.config or {}
        trial_id = trial_key(result)
        frame = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
        frame = _with_lagged_epochs(frame, result.metrics or {}, curves.get(trial_id, {}),
                                    curve_key)
        if "epoch" in frame:  # an epoch reported while the driver was stopping is not in Ray's
            # saved state: the resumed trial trains it again, and its second row is the one kept
            frame = frame.drop_duplicates("epoch", keep="last").reset_index(drop=True)
        keep = [c for c in frame.columns
                if c.startswith(METRIC_PREFIXES)
                or c in ("epoch", "phase", "lr", "node_id", "node_type", "timestamp",
                         "time_this_iter_s")]
        epochs = frame[keep].copy()
        if len(epochs):
            epochs.insert(0, "trial_id", trial_id)
            epoch_frames.append(epochs)
        best_value, best_epoch = None, None
        if metric in epochs and epochs[metric].notna().any():
            idx = (sign(mode) * epochs[metric]).idxmax()
            best_value, best_epoch = float(epochs.loc[idx, metric]), int(epochs.loc[idx, "epoch"])
        n_epochs = int(epochs["epoch"].max()) if len(epochs) else 0
        if result.error is not None:
            status = "failed"
        elif n_epochs >= trial_length(config, plan.max_epochs):
            status = "completed"
        elif n_epochs:
            status = "stopped early"  # by ASHA
        else:
            status = "not run"
        total = frame["time_total_s"].dropna() if "time_total_s" in frame else pd.Series()
        seconds = float(total.iloc[-1]) if len(total) else 0.0
        started, finished = _started_finished(frame)
        row: dict[str, Any] = {"trial_id": trial_id}
        # searched keys the space did not set (heads with attention off) stay empty
        row.update({key: config_value(config, key) for key in searched})
        row.update({"status": status, metric: best_value, "best_epoch": best_epoch,
                    "epochs": n_epochs, "seconds": round(seconds, 2),
                    "started": started, "finished": finished,
                    "node_id": epochs["node_id"].iloc[-1] if "node_id" in epochs and len(epochs)
                    else None,
                    "node_type": epochs["node_type"].iloc[-1]
                    if "node_type" in epochs and len(epochs) else None,
                    "error": _error_text(result.error)})
        trial_rows.append(row)
    trials = with_costs(typed(pd.DataFrame(trial_rows), trial_rows, searched),
                        plan.cpus_per_trial, plan.gpus_per_trial)
    epochs_all = pd.concat(epoch_frames, ignore_index=True) if epoch_frames else pd.DataFrame()
    return trials, epochs_all


def study_curves(plan: SearchPlan) -> dict[str, dict[int, float]]:
    """Each Ray trial's metric by epoch, as the run's study holds it."""
    import optuna

    try:
        study = optuna.load_study(study_name=plan.run_id, storage=plan.storage_url)
    except KeyError:  # no study: nothing was asked
        return {}
    return {str(t.user_attrs[RAY_TRIAL_ATTR]): curve_of(t)
            for t in study.get_trials(deepcopy=False) if RAY_TRIAL_ATTR in t.user_attrs}


def _with_lagged_epochs(frame: pd.DataFrame, last: dict[str, Any], curve: dict[int, float],
                        column: str) -> pd.DataFrame:
    """A trial's epochs, with those its log lacks. Ray restores a trial's log (result.json)
    from the store, where a driver killed during an upload can leave a copy older than the
    state Ray restores (cluster/README.md): a trial Ray holds as ended, not to run again, can
    have fewer logged epochs than it ran, or none. The missing ones come from the study
    (`column`, the metric the study records, by epoch) and Ray's state of the trial (its last
    result, every column), so that its status, best value and epochs are the ones it ran."""
    logged = set(frame["epoch"].dropna().astype(int)) if "epoch" in frame else set()
    rows: dict[int, dict[str, Any]] = {e: {"epoch": e, column: v} for e, v in curve.items()
                                       if e not in logged}
    epoch = last.get("epoch")
    if epoch and int(epoch) not in logged:
        rows[int(epoch)] = {k: v for k, v in last.items() if not isinstance(v, dict | list)}
    if not rows:
        return frame
    added = pd.DataFrame([rows[e] for e in sorted(rows)])
    both = pd.concat([frame, added], ignore_index=True) if len(frame) else added
    return both.sort_values("epoch", kind="stable").reset_index(drop=True)


def typed(frame: pd.DataFrame, rows: list[dict[str, Any]], searched: list[str]) -> pd.DataFrame:
    """`frame` (made from `rows`) with each searched column of one type, as a parquet column
    must be: mixed ones (2 or "all") become text, whole numbers stay whole where some rows
    lack the key (pandas would have made them floats)."""
    for key in searched:
        raw = [row.get(key) for row in rows]
        kinds = {type(v) for v in raw if v is not None}
        if len(kinds) > 1:
            frame[key] = [None if v is None else str(v) for v in raw]
        elif kinds == {int}:
            frame[key] = frame[key].astype("Int64")
    return frame


def _started_finished(frame: pd.DataFrame) -> tuple[float | None, float | None]:
    """Unix times of a trial's start (its first result's time less the trial's time until
    then: its start-up and first epoch) and of its last epoch."""
    if "timestamp" in frame:  # epochs from the study alone have no time
        frame = frame.dropna(subset=["timestamp"])
    if "timestamp" not in frame or not len(frame):
        return None, None
    first = frame.iloc[0]
    took = float(first["time_total_s"]) if "time_total_s" in frame else \
        float(first.get("time_this_iter_s", 0.0))
    return float(first["timestamp"]) - took, float(frame["timestamp"].iloc[-1])


def _each(results: tune.ResultGrid) -> list[tune.Result]:
    return [results[i] for i in range(len(results))]


def trial_key(result: tune.Result) -> str:
    return str((result.metrics or {}).get("trial_id") or Path(result.path).name)


def write_tables(plan: SearchPlan, results: tune.ResultGrid) -> pd.DataFrame:
    """The run folder's tables and best configurations; returns this run's own trials (a
    warm start's priors are in trials.parquet too, with status "prior")."""
    trials, epochs = collect(plan, results)
    listed = trials
    if plan.warm_start:
        from search.engine.warmstart import prior_rows

        priors = prior_rows(plan.storage_url, plan.run_id, list(plan.experiment.searched),
                            plan.experiment.metric, plan.experiment.mode,
                            [k for k, _ in plan.objectives])
        if priors:  # one type per column over both (a parquet column holds one)
            rows = [*trials.astype(object).where(trials.notna(), None).to_dict("records"),
                    *priors]
            listed = typed(pd.DataFrame(rows), rows, list(plan.experiment.searched))
    listed.to_parquet(plan.run_dir / "trials.parquet", index=False)
    epochs.to_parquet(plan.run_dir / "epochs.parquet", index=False)
    write_best(plan, results, trials, epochs)
    return trials


def rank_trials(trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """The trials with a result, best first: those that ran their full length by their best
    epoch's value, then those ASHA stopped early, by theirs (as Optuna ranks COMPLETE before
    PRUNED: the study's best trial is this ranking's first)."""
    if metric not in trials:
        return trials.iloc[:0]
    ranked = trials[trials["status"].isin(("completed", "stopped early")) & trials[metric].notna()]
    stopped = (ranked["status"] != "completed").rename("_stopped")
    order = pd.concat([stopped, ranked[metric]], axis=1).sort_values(
        ["_stopped", metric], ascending=[True, sign(mode) < 0], kind="stable")
    return ranked.loc[order.index]


def write_best(plan: SearchPlan, results: tune.ResultGrid, trials: pd.DataFrame,
               epochs: pd.DataFrame) -> None:
    """`best/config.json` (the best trial), `best/top_k.json` (the top k, best first) and
    `best/ranked.json` (every trial with a result, best first: greedy selection's pool)."""
    metric, mode = plan.experiment.metric, plan.experiment.mode
    ranked = rank_trials(trials, metric, mode)
    if ranked.empty:
        return
    configs = {trial_key(r): r.config or {} for r in _each(results)}
    top = []
    for _, row in ranked.iterrows():
        at_best = epochs[(epochs["trial_id"] == row["trial_id"])
                         & (epochs["epoch"] == row["best_epoch"])]
        top.append({
            "experiment": plan.experiment.name, "run_id": plan.run_id, "trial_id": row["trial_id"],
            "metric": metric, "mode": mode, "value": float(row[metric]),
            "epoch": int(row["best_epoch"]), "epochs_run": int(row["epochs"]),
            # what search.reproduce compares too: a metric can tie where the loss cannot
            "val_loss": float(at_best["val/loss"].iloc[0]) if "val/loss" in at_best and
            len(at_best) else None,
            "cpus_per_trial": plan.cpus_per_trial,
            "config": TrainConfig.from_dict(configs[row["trial_id"]]).to_dict(),
        })
    best = plan.run_dir / "best"
    best.mkdir(exist_ok=True)
    (best / "config.json").write_text(json.dumps(top[0], indent=1))
    (best / "top_k.json").write_text(json.dumps(top[: plan.top_k], indent=1))
    (best / "ranked.json").write_text(json.dumps(top, indent=1))
    if plan.objectives:
        (best / "pareto.json").write_text(json.dumps(pareto(plan, top, epochs), indent=1))


def pareto(plan: SearchPlan, ranked: list[dict[str, Any]],
           epochs: pd.DataFrame) -> list[dict[str, Any]]:
    """best/pareto.json: the full-length trials that no other full-length trial beats on
    every objective, each with its objectives' values at its best epoch, best first by the
    first objective (the records of ranked.json, with `objectives`)."""
    from search.engine.objectives import front, name_of

    keys, modes = [k for k, _ in plan.objectives], [m for _, m in plan.objectives]
    points = []
    for i, record in enumerate(ranked):
        at = epochs[(epochs["trial_id"] == record["trial_id"])
                    & (epochs["epoch"] == record["epoch"])]
        if record["epochs_run"] < trial_length(record["config"], plan.max_epochs) or \
                not len(at) or any(k not in at or pd.isna(at[k].iloc[0]) for k in keys):
            continue  # stopped early, or an objective missing
        points.append((i, [float(at[k].iloc[0]) for k in keys]))
    values = dict(points)
    return [{**ranked[i], "objectives": {name_of(k): v for k, v in zip(keys, values[i], strict=True)}}
            for i in front(points, modes)]


SPLIT_FILE = "split.csv"


def write_split(run_dir: Path, index: Any) -> None:
    """`split.csv`: the split medtune drew for data without one (image, split, label), so the
    final step and reproduce can check that they train on the same one."""
    frame = index.frame.assign(image=_image_keys(index))
    frame[["image", "split", "label"]].to_csv(run_dir / SPLIT_FILE, index=False)


def _image_keys(index: Any) -> Any:
    """A unique name per row: the image file relative to the data root (an item of an array
    file is `file#item`)."""
    root = str(index.root)
    return [(p[len(root) + 1:] if p.startswith(root + "/") else p) + (f"#{i}" if i >= 0 else "")
            for p, i in zip(index.frame["path"], index.frame["item"], strict=True)]


def check_split(run_dir: Path, index: Any) -> None:
    """Refuse to go on when the split drawn now differs from the search's (the data changed)."""
    from trainables.errors import ConfigError

    path = run_dir / SPLIT_FILE
    if not path.is_file() or not index.drawn_split:
        return
    saved = pd.read_csv(path, dtype={"image": str, "split": str})
    now = pd.DataFrame({"image": _image_keys(index), "split": index.frame["split"].astype(str)})
    merged = saved.merge(now, on="image", how="outer", suffixes=("_search", "_now"),
                         indicator=True)
    moved = merged[(merged["_merge"] != "both") | (merged["split_search"] != merged["split_now"])]
    if len(moved):
        first = moved.iloc[0]
        raise ConfigError(
            f"{index.root}: the data changed since the search: {len(moved)} image(s) are not in "
            f"the split the search drew ({path}), e.g. {first['image']}; train on the data "
            "the search used")
