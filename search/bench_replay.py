"""`python -m search.bench replay`: the efficiency comparisons on every committed learning-curve
table (results/bench/curves/*.parquet), through the replay backend (search/replay.py).

Each arm (random search with full-length trials, TPE alone, ASHA alone, TPE + ASHA) searches
each table `--seeds` times with the experiment's own budget (trials, ASHA's grace period and
reduction factor, TPE's start-up trials; epochs: the table's), `REPLAY_WORKERS` trials at a
time, through `search.run --replay` in one process per table (one Ray). A run's epochs are
ordered by the simulated clock (search.replay.simulated_times). The rows name the table's
experiment; the surrogate's held-out error comes first.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search.efficiency import ARMS, arm_seed

REPLAY_WORKERS = 4  # trials at a time, as on a 4-GPU machine
# replayed searches' seeds start here: far from the collector's (chunk i: seed i), so that no
# arm draws the recorded configurations themselves (a random sampler with a chunk's seed would
# replay its exact curves while every other arm gets the surrogate's)
REPLAY_SEED_BASE = 10_000


def replay_argv(p: dict[str, Any], results: str, name: str, arm: str, seed: int) -> list[str]:
    sampler, scheduler = arm.split("-")
    quick = ["--num-samples", "6"] if p.get("quick") else []
    return [p["table_experiment"], "--replay", p["table"], "--results", results, "--name", name,
            "--seed", str(REPLAY_SEED_BASE + arm_seed(arm, seed)), "--sampler", sampler,
            "--scheduler", scheduler, "--cpus-per-trial", str(2 / REPLAY_WORKERS), "--max-concurrent",
            str(REPLAY_WORKERS), "--no-wandb", *quick]


def replay_run(run_dir: Path, metric: str) -> dict[str, Any]:
    """A replayed search's epochs in the order of the simulated clock."""
    from search.replay import simulated_times

    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    epochs = epochs.assign(sim=simulated_times(epochs, REPLAY_WORKERS)).sort_values("sim")
    return {"values": [float(v) for v in epochs[metric]],
            "simulated_minutes": [float(t) / 60 for t in epochs["sim"]],
            "trials": int(epochs["trial_id"].nunique())}


def measure_replay(p: dict[str, Any]) -> dict[str, Any]:
    """Every arm and seed on one table, in this process (Ray started once)."""
    from search.bench import quiet_search_env
    from search.bench_tune import _search
    from search.curves import read_curves

    quiet_search_env(wandb=False)
    curves = read_curves(p["table"])
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as results:
        for seed in range(p["seeds"]):
            for arm in ARMS:
                name = f"{arm}-{seed}"
                with contextlib.redirect_stdout(io.StringIO()):  # a line per epoch and trial
                    _search(replay_argv(p, results, name, arm, seed))
                runs[arm].append(replay_run(Path(results) / curves.meta["experiment"] / name,
                                            curves.metric))
    return {"runs": runs}


def tables(params: dict[str, Any]) -> list[Path]:
    from search.curves import CURVES_DIR

    found = sorted(Path(t) for t in params.get("tables") or CURVES_DIR.glob("*.parquet"))
    return found[:1] if params.get("quick") else found


def bench_replay(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    from search.bench import measure
    from search.bench_rows import value_row
    from search.bench_tune import efficiency_record
    from search.curves import read_curves
    from search.replay import held_out_error
    from trainables.errors import ConfigError

    found = tables(params)
    if not found:
        raise ConfigError("replay: no learning-curve table in results/bench/curves/ (python -m "
                          "search.bench collect EXPERIMENT --configs N writes one)")
    rows: list[dict[str, Any]] = []
    for table in found:
        curves = read_curves(table)
        name, metric, mode = curves.meta["experiment"], curves.metric, curves.mode
        error = held_out_error(curves)
        rows += [
            value_row("replay", f"{name}: surrogate's held-out error of a configuration's best "
                                f"{metric} ({error['configs']} configurations; always the "
                                f"median: {error['mae_best_of_the_median']:.3f})",
                      error["mae_best"]),
            value_row("replay", f"{name}: rank correlation of held-out best values",
                      error["spearman_best"]),
        ]
        echo(f"  replay {name}: {params['replay_seeds']} seeds x {len(ARMS)} arms on {table}")
        runs = measure("replay", {**params, "table": str(table), "table_experiment": name,
                                  "seeds": params["replay_seeds"]})["runs"]
        pick = np.max if mode == "max" else np.min
        best = float(pick(curves.matrix(metric)))  # the table's best: no replay exceeds it
        rows += efficiency_record(params, "replay", runs, mode, metric,
                                  clock="simulated_minutes", label=name, best=best,
                                  title=f"{name}: {curves.meta['configs']} recorded "
                                        f"configurations, replayed")
    return rows
