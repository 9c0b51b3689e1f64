"""`python -m search.bench warmstart`: what `--warm-start` buys (search/warmstart.py).

On the first committed learning-curve table (results/bench/curves/), through the replay
backend, each seed: an earlier search (TPE + ASHA, the experiment's budget, another seed),
then a cold search and a search warm-started from the earlier one, both with the same seed.
The measure: epochs (in the order of the simulated clock, all trials counted) each spends
until its best so far reaches the cold search's final best; a warm search that never reaches
it counts as infinite. Ratio: cold over warm ("times fewer"), with its interval over seeds.
Target: 2 (the warm search at most half the epochs).

What this is, plainly: the earlier search ran on the same recorded curves (the same data), so
its best configurations are the best a search could re-run. It is the case where a warm start
helps most; a warm start from a related set (another seed and camera) needs a second table
recorded on that set, which does not exist yet.
"""

from __future__ import annotations

import tempfile
from typing import Any

from search.bench_replay import replay_run, replayed_search, tables
from search.efficiency import epochs_to, final_best

PRIOR_SEED_OFFSET = 5_000  # the earlier search's seed: apart from the compared ones


def measure_warmstart(p: dict[str, Any]) -> dict[str, Any]:
    """Every seed's earlier, cold and warm search on one table, in this process."""
    from search.bench_process import quiet_search_env
    from search.curves import read_curves

    quiet_search_env(wandb=False)
    curves = read_curves(p["table"])
    experiment, quick = curves.meta["experiment"], bool(p.get("quick"))
    runs: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as results:
        for seed in range(p["seeds"]):
            earlier = replayed_search(experiment, p["table"], results, f"earlier-{seed}",
                                      PRIOR_SEED_OFFSET + seed, quick=quick)
            for arm, flags in (("cold", []), ("warm", ["--warm-start", str(earlier)])):
                run = replayed_search(experiment, p["table"], results, f"{arm}-{seed}", seed,
                                      *flags, quick=quick)
                runs[arm].append(replay_run(run, curves.metric))
    return {"runs": runs, "metric": curves.metric, "mode": curves.mode}


def bench_warmstart(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    from search.bench_process import measure
    from search.bench_rows import interval_row

    table = tables(params, "warmstart")[0]
    echo(f"  warmstart {table.stem}: {params['replay_seeds']} seeds, an earlier search then a "
         "cold and a warm-started one")
    measured = measure("warmstart", {**params, "table": str(table),
                                     "seeds": params["replay_seeds"]})
    runs, mode = measured["runs"], measured["mode"]
    cold_epochs, warm_epochs = [], []
    for cold, warm in zip(runs["cold"], runs["warm"], strict=True):
        target = final_best(cold, mode)
        cold_epochs.append(epochs_to(cold["values"], target, mode) or float("inf"))
        warm_epochs.append(epochs_to(warm["values"], target, mode) or float("inf"))
    return [interval_row(
        "warmstart", f"{table.stem}: epochs to the cold search's final best "
                     f"{measured['metric']}, warm-started (from a search on the same table, "
                     "another seed) vs cold", (warm_epochs, cold_epochs), target=2.0,
        table=table.stem)]
