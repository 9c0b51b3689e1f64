"""`python -m search.bench warmstart`: what `--warm-start` buys (search/engine/warmstart.py).

On the first committed learning-curve table (results/bench/curves/), through the replay
backend, each seed: an earlier search (TPE + ASHA, the experiment's budget, another seed) on
each source, a cold search, and a search warm-started from each earlier one, the cold and the
warm ones with the same seed. The sources:
- the same table: the earlier search ran on the same recorded curves (the same data), so its
  best configurations are the best a search could re-run, and its priors count in ASHA's
  rungs: the case where a warm start helps most;
- each table of the same experiment in results/bench/curves/related/, recorded on another data
  set (e.g. the APTOS-format demo: another seed and another camera): its priors join the study
  and its best configurations run first, but its values were measured on other images.
The measure: epochs (in the order of the simulated clock, all trials counted) each spends
until its best so far reaches the cold search's final best; a warm search that never reaches
it counts as infinite. Ratio: cold over warm ("times fewer"), with its interval over seeds.
Target: 2 (the warm search at most half the epochs).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from search.bench.efficiency import epochs_to, final_best
from search.bench.replay import replay_run, replayed_search, tables

PRIOR_SEED_OFFSET = 5_000  # the earlier search's seed: apart from the compared ones
SAME = "same"  # the source that is the compared table itself


def related_tables(table: Path, experiment: str) -> list[Path]:
    """The tables of `experiment` recorded on other data (`related/` beside `table`): the
    sources of a warm start from a related set."""
    from search.engine.curves import read_curves

    return [t for t in sorted((table.parent / "related").glob("*.parquet"))
            if read_curves(t).meta["experiment"] == experiment]


def measure_warmstart(p: dict[str, Any]) -> dict[str, Any]:
    """Every seed's earlier searches, cold search and warm searches on one table, in this
    process."""
    from search.bench.process import quiet_search_env
    from search.engine.curves import read_curves

    quiet_search_env(wandb=False)
    curves = read_curves(p["table"])
    experiment, quick = curves.meta["experiment"], bool(p.get("quick"))
    sources = {SAME: p["table"], **{Path(t).stem: t for t in p.get("related", ())}}
    runs: dict[str, list[dict[str, Any]]] = {"cold": [], **{s: [] for s in sources}}
    with tempfile.TemporaryDirectory() as results:
        for seed in range(p["seeds"]):
            earlier = {source: replayed_search(experiment, table, results,
                                               f"earlier-{source}-{seed}",
                                               PRIOR_SEED_OFFSET + seed, quick=quick)
                       for source, table in sources.items()}
            cold = replayed_search(experiment, p["table"], results, f"cold-{seed}", seed,
                                   quick=quick)
            runs["cold"].append(replay_run(cold, curves.metric))
            for source, run in earlier.items():
                warm = replayed_search(experiment, p["table"], results, f"warm-{source}-{seed}",
                                       seed, "--warm-start", str(run), quick=quick)
                runs[source].append(replay_run(warm, curves.metric))
    return {"runs": runs, "metric": curves.metric, "mode": curves.mode}


def bench_warmstart(params: dict[str, Any], repeats: int, echo: Any) -> list[dict[str, Any]]:
    from search.bench.process import measure
    from search.bench.rows import interval_row
    from search.engine.curves import read_curves

    table = tables(params, "warmstart")[0]
    related = related_tables(table, read_curves(table).meta["experiment"])
    echo(f"  warmstart {table.stem}: {params['replay_seeds']} seeds, earlier searches on "
         f"{', '.join([table.stem, *(t.stem for t in related)])}, then a cold and a "
         "warm-started one from each")
    measured = measure("warmstart", {**params, "table": str(table),
                                     "related": [str(t) for t in related],
                                     "seeds": params["replay_seeds"]})
    runs, mode, metric = measured["runs"], measured["mode"], measured["metric"]
    targets = [final_best(cold, mode) for cold in runs["cold"]]
    cold_epochs = [epochs_to(cold["values"], target, mode) or float("inf")
                   for cold, target in zip(runs["cold"], targets, strict=True)]
    rows = []
    for source, path in [(SAME, table), *((t.stem, t) for t in related)]:
        warm_epochs = [epochs_to(warm["values"], target, mode) or float("inf")
                       for warm, target in zip(runs[source], targets, strict=True)]
        where = ("a search on the same table, another seed" if source == SAME
                 else f"a search on {source}: {_data_of(path)}")
        rows.append(interval_row(
            "warmstart", f"{table.stem}: epochs to the cold search's final best {metric}, "
                         f"warm-started (from {where}) vs cold", (warm_epochs, cold_epochs),
            target=2.0, table=table.stem, source=source))
    return rows


def _data_of(table: Path) -> str:
    """What a related table was recorded on, in a few words: its data set's folder and kind."""
    from search.engine.curves import read_curves

    fixed = read_curves(table).meta["fixed"]
    return f"{Path(str(fixed.get('data', ''))).name} ({fixed.get('dataset')})"
