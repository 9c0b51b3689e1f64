"""`python -m search.bench reproducible`: what `--reproducible` costs (search/engine/reproducible.py).

On the first committed learning-curve table (results/bench/curves/), TPE + ASHA searches as
`search.run` runs them, `REPLAY_WORKERS` trials at a time, through the replay backend, each
seed twice: free-running, and in batches of `BATCH` (each batch once the one before it has
ended, ASHA's cutoffs from earlier batches). The cost is the whole search's time on the
simulated clock (the recorded epochs' seconds; a batch's trials wait for the batch before
theirs), free-running over batched, with its interval over seeds; beside it, each side's best
value at the end (the batches must not buy reproducibility with a worse search).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from search.bench.replay import REPLAY_WORKERS, replayed_search, tables
from trainables.tasks import best, sign

BATCH = 4
ARMS = {"free": [], "batches": ["--reproducible", str(BATCH)]}


def run_cost(run_dir: Path, metric: str, mode: str, batched: bool) -> dict[str, Any]:
    """A replayed search's simulated minutes (with its batches' waits) and its best value."""
    import optuna

    from search.engine.replay import simulated_times

    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    batch_of = None
    if batched:
        study = optuna.load_study(study_name=run_dir.name,
                                  storage=f"sqlite:///{run_dir / 'study.db'}")
        batch_of = {t.user_attrs["ray_trial"]: t.number // BATCH for t in study.trials}
    ends = simulated_times(epochs, REPLAY_WORKERS, batch_of)
    values = epochs[metric]
    return {"minutes": float(ends.max()) / 60, "trials": int(epochs["trial_id"].nunique()),
            "best": float(best(values, mode))}


def measure_reproducible(p: dict[str, Any]) -> dict[str, Any]:
    """Both arms, every seed, on one table, in this process (Ray started once)."""
    from search.bench.process import quiet_search_env
    from search.engine.curves import read_curves

    quiet_search_env(wandb=False)
    curves = read_curves(p["table"])
    experiment = curves.meta["experiment"]
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as results:
        for seed in range(p["seeds"]):
            for arm, flags in ARMS.items():
                run = replayed_search(experiment, p["table"], results, f"{arm}-{seed}", seed,
                                      *flags, quick=bool(p.get("quick")))
                runs[arm].append(run_cost(run, curves.metric, curves.mode, bool(flags)))
    return {"runs": runs}


def bench_reproducible(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    from search.bench.process import measure
    from search.bench.rows import interval_row, row
    from search.engine.curves import read_curves

    table = tables(params, "reproducible")[0]
    curves = read_curves(table)
    name = curves.meta["experiment"]
    echo(f"  reproducible {name}: {params['replay_seeds']} seeds, free-running and in batches "
         f"of {BATCH}, {REPLAY_WORKERS} at a time")
    runs = measure("reproducible", {**params, "table": str(table),
                                    "seeds": params["replay_seeds"]})["runs"]
    free, batched = runs["free"], runs["batches"]
    higher = sign(curves.mode) > 0
    return [
        interval_row("reproducible", f"{name}: simulated minutes of a search, batches of "
                                     f"{BATCH} vs free-running ({REPLAY_WORKERS} at a time)",
                     ([r["minutes"] for r in batched], [r["minutes"] for r in free]),
                     table=name, spread_runs=runs),
        row("reproducible", f"{name}: median best {curves.metric} at the end, batches of "
                            f"{BATCH} vs free-running",
            statistics.median(r["best"] for r in batched),
            statistics.median(r["best"] for r in free), higher),
    ]
