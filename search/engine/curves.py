"""Learning-curve tables: configurations drawn at random from an experiment's space, each
trained to full length with every epoch recorded (`python -m search.bench collect`).

    python -m search.bench collect deepdrid_finetune --configs 250 --set image_size=96
    python -m search.bench collect medmnist --configs 250

A table (parquet; `results/bench/curves/<experiment>.parquet` by default) has a row per
configuration and epoch: `config` (its id), `epoch`, `params` (the searched values, JSON),
`seconds` (the epoch's wall time, training and validation) and every metric the trial
reported (`val/...`, `train/loss`). The schema's metadata (key `medtune`, JSON) holds the
experiment, its metric and mode, the space (each parameter's Optuna distribution), the fixed
trial config, the epochs, the data's fingerprint, package versions, the machine, the command
and the configurations that failed (with their error; they are not in the rows).

The configurations are trained by `search.run` itself in resumable chunks
(search/bench/replay.py: `collect`); `write_table` makes the table of the finished chunks'
run folders.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from trainables.errors import ConfigError
from trainables.tasks import best_of_rows

META_KEY = b"medtune"
CURVES_DIR = Path("results") / "bench" / "curves"


@dataclass(frozen=True)
class Curves:
    """A learning-curve table and what it was recorded on."""

    frame: pd.DataFrame  # a row per configuration and epoch
    meta: dict[str, Any]

    @property
    def metric(self) -> str:
        return str(self.meta["metric"])

    @property
    def mode(self) -> str:
        return str(self.meta["mode"])

    @property
    def epochs(self) -> int:
        return int(self.meta["max_epochs"])

    def distributions(self) -> dict[str, Any]:
        """Each searched parameter's Optuna distribution."""
        from optuna.distributions import json_to_distribution

        return {name: json_to_distribution(text) for name, text in self.meta["space"].items()}

    def configs(self) -> pd.DataFrame:
        """A row per configuration: `config`, `params` (a dict), and the matrices' order."""
        first = self.frame.drop_duplicates("config").reset_index(drop=True)
        return pd.DataFrame({"config": first["config"],
                             "params": [json.loads(p) for p in first["params"]]})

    def matrix(self, column: str) -> Any:
        """(configurations, epochs) array of `column`, configurations in `configs()` order."""
        wide = self.frame.pivot(index="config", columns="epoch", values=column)
        order = self.frame.drop_duplicates("config")["config"]
        return wide.loc[order.tolist(), list(range(1, self.epochs + 1))].to_numpy(dtype=float)

    def best_of(self, curves: Any) -> Any:
        """Each row's best value by the table's mode: a (configurations, epochs) array of the
        metric (recorded or predicted) gives each configuration's best."""
        return best_of_rows(curves, self.mode)

    def bests(self) -> Any:
        """Each configuration's best recorded value of the metric, in `configs()` order."""
        return self.best_of(self.matrix(self.metric))

    def best(self) -> float:
        """The best value the table recorded (no replayed search exceeds it)."""
        return float(self.best_of(self.bests()[None, :])[0])


def write_curves(path: Path, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    schema_meta = {**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    pq.write_table(table.replace_schema_metadata(schema_meta), partial)
    partial.replace(path)  # a reader never sees half a table


def read_curves(path: str | Path) -> Curves:
    """A table written by `search.bench collect` (one clear error for anything else)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no learning-curve table there (python -m search.bench "
                          "collect EXPERIMENT writes one)")
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several kinds for a file that is not parquet
        raise ConfigError(f"{path}: not a parquet table ({e})") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ConfigError(f"{path}: a parquet table without medtune's metadata: not written by "
                          "python -m search.bench collect")
    meta = json.loads(raw)
    frame = table.to_pandas()
    missing = {"config", "epoch", "params", "seconds", meta["metric"]} - set(frame.columns)
    if missing:
        raise ConfigError(f"{path}: columns {sorted(missing)} missing")
    counts = frame.groupby("config")["epoch"].nunique()
    short = counts[counts != int(meta["max_epochs"])]
    if len(short):
        raise ConfigError(f"{path}: configuration {short.index[0]} has {short.iloc[0]} epochs, "
                          f"not {meta['max_epochs']}")
    return Curves(frame, meta)


@dataclass(frozen=True)
class Recorded:
    """The table that an earlier collection wrote (None: none), whose chunks' run folders may
    be gone."""

    curves: Curves | None

    def held(self, chunks: list[tuple[int, int]]) -> set[str]:
        """The names of the chunks (index, configurations) that the table holds whole: every
        configuration there, completed or failed."""
        if self.curves is None:
            return set()
        ids = [*self.curves.frame["config"].drop_duplicates(),
               *(f["config"] for f in self.curves.meta["failed"] if "config" in f)]
        counts = Counter(i.split("/", 1)[0] for i in ids)
        return {f"chunk-{i:03d}" for i, n in chunks if counts[f"chunk-{i:03d}"] == n}

    def rows(self, name: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        """The chunk's rows and failed configurations, as the table holds them."""
        assert self.curves is not None
        frame = self.curves.frame
        return (frame[frame["config"].str.startswith(f"{name}/")],
                [f for f in self.curves.meta["failed"]
                 if f.get("config", "").startswith(f"{name}/")])


def write_table(experiment: str, chunks: list[Path | str], out: Path, *, command: str,
                settings: dict[str, Any], recorded: Recorded | None = None) -> Curves:
    """The table of the finished chunks' trials (failed ones listed in the metadata). A chunk
    is its run folder, or its name where `recorded` (the table that was at `out`) holds its
    rows."""
    from search.engine.environment import describe
    from spaces import get_experiment

    exp = get_experiment(experiment)
    frames, space, failed, fixed = [], {}, [], {}
    for source in chunks:
        if isinstance(source, str):
            assert recorded is not None and recorded.curves is not None
            frame, errors = recorded.rows(source)
            space.update(recorded.curves.meta["space"])
        else:
            fixed = json.loads((source / "config.json").read_text())["settings"]["fixed"]
            frame, distributions, errors = chunk_rows(source, exp.metric)
            space.update(distributions)
        frames.append(frame)
        failed += errors
    old = recorded.curves.meta["fixed"] if recorded is not None and recorded.curves else None
    if not fixed and old is not None:  # no chunk was trained here: the table's own
        fixed = old
    elif old is not None:
        check_same_settings(out, old, fixed)
    frame = pd.concat(frames, ignore_index=True)
    meta = {
        "experiment": experiment, "metric": exp.metric, "mode": exp.mode, "task": exp.task.kind,
        "space": space, "fixed": fixed, "max_epochs": int(frame["epoch"].max()),
        "configs": int(frame["config"].nunique()), "failed": failed,
        "data_fingerprint": data_fingerprint(fixed), "command": command, "settings": settings,
        "collected": time.strftime("%Y-%m-%d %H:%M:%S"), "environment": describe(),
    }
    write_curves(out, frame, meta)
    return Curves(frame, meta)


def demo_set(value: Any) -> str | None:
    """The name of the generated demo set that a data path points into (`.../demo/<name>`),
    else None. A demo set is the same set wherever it was generated: its name holds its
    generator's seed and version."""
    if isinstance(value, str) and Path(value).parent.name == "demo":
        return Path(value).name
    return None


def check_same_settings(out: Path, recorded: dict[str, Any], fixed: dict[str, Any]) -> None:
    """A table grown by a later collection holds curves of one trial config (but the seed); for
    a path into a demo set, only the set's name counts (demo_set)."""
    def same(a: Any, b: Any) -> bool:
        return a == b or (demo_set(a) is not None and demo_set(a) == demo_set(b))

    differ = sorted(k for k in {*recorded, *fixed} - {"seed"}
                    if not same(recorded.get(k), fixed.get(k)))
    if differ:
        said = ", ".join(f"{k}: {recorded.get(k)!r} there, {fixed.get(k)!r} now" for k in differ)
        raise ConfigError(f"{out}: its configurations were trained with other settings "
                          f"({said}); collect into another --out (the new chunks stay in "
                          "the cache)")


def chunk_rows(run_dir: Path, metric: str) -> tuple[pd.DataFrame, dict[str, str], list[dict]]:
    """One chunk's rows (completed trials), its parameters' distributions (JSON) and its failed
    trials. The searched values come from Ray Tune's params.json (their own types: 2 and "all"
    stay a number and a word)."""
    import optuna
    from optuna.distributions import distribution_to_json

    study = optuna.load_study(study_name=run_dir.name, storage=f"sqlite:///{run_dir / 'study.db'}")
    distributions: dict[str, str] = {}
    for trial in study.get_trials(deepcopy=False):
        distributions.update({k: distribution_to_json(d) for k, d in trial.distributions.items()})
    trials = pd.read_parquet(run_dir / "trials.parquet")
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    rows, failed = [], []
    for _, trial in trials.iterrows():
        config = json.loads((run_dir / "tune" / f"trial_{trial['trial_id']}" / "params.json")
                            .read_text())
        params = {k: config[k] for k in distributions if k in config}
        if trial["status"] != "completed":
            failed.append({"config": f"{run_dir.name}/{trial['trial_id']}", "params": params,
                           "status": trial["status"], "error": trial["error"]})
            continue
        own = epochs[epochs["trial_id"] == trial["trial_id"]].sort_values("epoch")
        keep = [c for c in own.columns if c.startswith(("val/", "train/loss"))]
        part = own[["epoch", *keep]].copy()
        part.insert(0, "params", json.dumps(params, sort_keys=True))
        part.insert(0, "config", f"{run_dir.name}/{trial['trial_id']}")
        part["seconds"] = own["time_this_iter_s"].to_numpy(dtype=float)
        rows.append(part)
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if len(frame) and metric not in frame:
        raise ConfigError(f"{run_dir}: its epochs have no {metric}")
    return frame, distributions, failed


def data_fingerprint(fixed: dict[str, Any]) -> str | None:
    """The data the curves were recorded on (None where it is no longer on this machine)."""
    from trainables.data.cache import fingerprint
    from trainables.data.trial_data import resolve_data
    from trainables.errors import MedtuneError
    from trainables.train.config import TrainConfig

    try:
        return fingerprint(resolve_data(TrainConfig.from_dict(fixed))[1])
    except (MedtuneError, OSError):
        return None
