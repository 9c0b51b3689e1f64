"""What a run cost: the resources a trial or a final-step model held, times how long it held
them, on which node type (the `medtune-node-type` label of cluster/gpu.yaml's node types).

A trial's time is Ray Tune's `time_total_s` at its last result: its time training, summed
over its sessions and carried across `--resume` in its checkpoints, so the time the run was
stopped is not counted (Ray's TimeoutStopper counts it, ray#21038). A final-step model's time
is its task's. Stage 1 is built inside the first trial that needs it: its time is part of the
search's and is shown on its own line too. `--budget-gpu-hours` (search.engine.driver.LiveLimiter)
stops new trials when the search's hours, the running trials' rest and one more trial would
pass it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd


def hours(seconds: Any, cpus: float, gpus: float) -> dict[str, Any]:
    """GPU- and CPU-hours of `seconds` (a number, or a column of them) holding the resources."""
    return {"gpu_hours": gpus * seconds / 3600, "cpu_hours": cpus * seconds / 3600}


def with_costs(trials: pd.DataFrame, cpus: float, gpus: float) -> pd.DataFrame:
    """trials.parquet's rows with the hours each trial held (its `seconds` are Ray's)."""
    seconds = trials["seconds"].astype(float) if "seconds" in trials else pd.Series(dtype=float)
    return trials.assign(**hours(seconds, cpus, gpus))


def _sum(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    rows = list(rows)
    return {k: float(sum(r[k] for r in rows)) for k in ("gpu_hours", "cpu_hours")}


def run_ledger(trials: pd.DataFrame, models: list[dict[str, Any]],
               stage1_minutes: float | None, cpus: float, gpus: float) -> dict[str, Any]:
    """The run's ledger (final/metrics.json `ledger`): this run's trials (with their hours),
    the final step's models ({"model": name, "minutes": m, "node_type": t}), stage 1's
    minutes if it was built; per part, per node type and in total."""
    search = [{"gpu_hours": float(r.gpu_hours), "cpu_hours": float(r.cpu_hours),
               "node_type": r.node_type if isinstance(r.node_type, str) else "unknown"}
              for r in trials.itertuples()] if "gpu_hours" in trials else []
    final = [{**hours(60 * m["minutes"], cpus, gpus), "node_type": m["node_type"],
              "model": m["model"]} for m in models]
    ledger: dict[str, Any] = {
        "search": {**_sum(search), "trials": len(search)},
        "final": {**_sum(final), "models": len(final)},
        "final_models": final,
        "held": {"cpus": cpus, "gpus": gpus},
    }
    ledger["total"] = _sum([ledger["search"], ledger["final"]])
    if stage1_minutes is not None:
        ledger["stage1"] = {**hours(60 * stage1_minutes, cpus, gpus), "part_of": "search"}
    by_type: dict[str, list[dict[str, float]]] = {}
    for row in search + final:
        by_type.setdefault(row["node_type"], []).append(row)
    ledger["node_types"] = {name: _sum(rows) for name, rows in sorted(by_type.items())}
    return ledger


def describe(ledger: dict[str, Any]) -> str:
    """'cost: 0.50 GPU-hours, 2.00 CPU-hours (search 0.40 ..., final step 0.10 ...)'"""
    def part(d: dict[str, float]) -> str:
        return f"{d['gpu_hours']:.2f} GPU-h, {d['cpu_hours']:.2f} CPU-h"

    stage1 = (f", of which stage 1 (built once, in a trial of this run or of an earlier one "
              f"sharing its store) {part(ledger['stage1'])}" if "stage1" in ledger else "")
    types = "; ".join(f"{name} {part(d)}" for name, d in ledger["node_types"].items())
    return (f"cost: {ledger['total']['gpu_hours']:.2f} GPU-hours, "
            f"{ledger['total']['cpu_hours']:.2f} CPU-hours: search {part(ledger['search'])} "
            f"({ledger['search']['trials']} trials{stage1}), final step "
            f"{part(ledger['final'])} ({ledger['final']['models']} models); by node type: "
            f"{types}")


def search_line(trials: pd.DataFrame, budget: float | None) -> str:
    """The search's own cost, for its summary."""
    gpu, cpu = float(trials["gpu_hours"].sum()), float(trials["cpu_hours"].sum())
    of = f" of the {budget:g} budgeted" if budget is not None else ""
    return (f"cost: {gpu:.3f} GPU-hours{of}, {cpu:.3f} CPU-hours (resources held x Ray's "
            "trial time; time stopped not counted)")
