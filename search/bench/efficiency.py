"""Is the search worth running? Random search with full-length trials against TPE alone, ASHA
alone and TPE + ASHA, over seeds (`search.bench efficiency` on real training, `search.bench
replay` on recorded curves).

A run is a search's epochs in the order they finished (each with its validation value and its
wall or simulated minutes). The measures, for each method against random search:
- epochs to random search's median final best (the target): the lower median over seeds of
  the epochs each run spent until its best so far reached the target (a run that never did:
  infinite), as a ratio "times fewer" with a bootstrap interval over seeds;
- minutes to the same target, the same way;
- the regret at equal epochs: the best value known (over every run of every method) less the
  best so far after as many epochs as the shorter method spends (a median run of it), as a
  ratio "times smaller" with its interval.
The arms never share their random start-up trials: each arm's sampler gets its own seeds
(`arm_seed`); with one seed TPE's start-up trials would be exactly random search's.
"""

from __future__ import annotations

import math
import statistics
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from search.bench.rows import interval_row
from trainables.tasks import best as top
from trainables.tasks import best_so_far, better, sign

BASELINE = "random-fifo"
ARMS = (BASELINE, "tpe-fifo", "random-asha", "tpe-asha")  # sampler-scheduler
COMPARISONS = {"tpe-fifo": "TPE alone", "random-asha": "ASHA alone", "tpe-asha": "TPE + ASHA"}
TARGETS = {"tpe-asha": 3.0}  # epochs to the target: at least 3 times fewer than random search
ARM_SEED_STRIDE = 1000  # arm i searches with seeds i * 1000 + s


def arm_seed(arm: str, seed: int) -> int:
    """The search's seed of an arm's run: no two arms share one (nor their start-up trials)."""
    return ARMS.index(arm) * ARM_SEED_STRIDE + seed


def epochs_to(values: list[float], target: float, mode: str) -> int | None:
    """Epochs (finished, counted over all trials) until the best value reaches `target`."""
    for i, v in enumerate(best_so_far(values, mode), 1):
        if v == v and not better(target, v, mode):
            return i
    return None


def final_best(run: dict[str, Any], mode: str) -> float:
    return best_so_far(run["values"], mode)[-1]


def median_target(runs: list[dict[str, Any]], mode: str) -> float:
    """Random search's median final best: the value that at least half its runs reach."""
    finals = sorted((final_best(r, mode) for r in runs), key=lambda v: -sign(mode) * v)
    return finals[math.ceil(len(finals) / 2) - 1]


def cost_to(run: dict[str, Any], target: float, mode: str, clock: str = "") -> float:
    """Epochs (or, with `clock`, that column's value at the epoch) until `target`; inf never."""
    n = epochs_to(run["values"], target, mode)
    if n is None:
        return math.inf
    return float(n) if not clock else float(run[clock][n - 1])


def regret_at(run: dict[str, Any], epochs: int, best: float, mode: str) -> float:
    """The best known less this run's best after `epochs` (its last, if it spent fewer)."""
    so_far = best_so_far(run["values"], mode)
    value = so_far[min(epochs, len(so_far)) - 1]
    return sign(mode) * (best - value)


def comparison_rows(section: str, runs: dict[str, list[dict[str, Any]]], mode: str,
                    metric: str, *, clock: str = "minutes", label: str = "",
                    best: float | None = None) -> list[dict[str, Any]]:
    """Per method against random search: epochs and minutes to random search's median final
    best, and the regret at equal epochs, each with its interval over seeds. `best` is the
    best value known (default: the best of every run); `label` prefixes each measure (the
    experiment, for a replay)."""
    base = runs[BASELINE]
    target = median_target(base, mode)
    every = [final_best(r, mode) for rs in runs.values() for r in rs]
    best = best if best is not None else top(every, mode)
    prefix = f"{label}: " if label else ""
    rows = []
    for arm, name in COMPARISONS.items():
        ours = runs[arm]
        epochs = [cost_to(r, target, mode) for r in ours], [cost_to(r, target, mode) for r in base]
        rows.append(interval_row(
            section, f"{prefix}{name}: epochs to random search's median best {metric} "
                     f"({target:.3f})", epochs, target=TARGETS.get(arm), arm=arm))
        minutes = ([cost_to(r, target, mode, clock) for r in ours],
                   [cost_to(r, target, mode, clock) for r in base])
        rows.append(interval_row(section, f"{prefix}{name}: {clock.replace('_', ' ')} to the same",
                                 minutes, arm=arm))
        equal = int(min(statistics.median_low([len(r["values"]) for r in rs])
                        for rs in (ours, base)))
        regrets = ([regret_at(r, equal, best, mode) for r in ours],
                   [regret_at(r, equal, best, mode) for r in base])
        rows.append(interval_row(section, f"{prefix}{name}: regret at {equal} epochs "
                                          f"(best known {best:.3f})", regrets, arm=arm))
    return rows


def anytime(runs: list[dict[str, Any]], mode: str, grid: np.ndarray,
            clock: str = "") -> np.ndarray:
    """(3, len(grid)): the 25th, 50th and 75th percentiles over runs of the best so far at
    each point of `grid` (epochs, or the `clock` column); a run that ended holds its last best
    (its search is done), and before its first result a run has none (NaN)."""
    curves = []
    for r in runs:
        so_far = np.array(best_so_far(r["values"], mode))
        at = np.arange(1, len(so_far) + 1) if not clock else np.array(r[clock], dtype=float)
        index = np.searchsorted(at, grid, side="right") - 1  # the last result by each point
        curves.append(np.where(index >= 0, so_far[np.clip(index, 0, None)], np.nan))
    with warnings.catch_warnings():  # a point before every run's first result: NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(np.array(curves), [25, 50, 75], axis=0)


def anytime_figure(runs: dict[str, list[dict[str, Any]]], mode: str, metric: str, out: Path,
                   *, title: str, clock: str = "minutes") -> Path:
    """Best so far against cumulative epochs and against the clock: each method's median over
    seeds with its interquartile band, and random search's median final best dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    longest = max(len(r["values"]) for rs in runs.values() for r in rs)
    last = max(r[clock][-1] for rs in runs.values() for r in rs)
    grids = (np.arange(1, longest + 1, dtype=float), np.linspace(0, last, 200))
    every = [final_best(r, mode) for rs in runs.values() for r in rs]
    best = top(every, mode)
    for ax, grid, use in zip(axes, grids, ("", clock), strict=True):
        medians = []
        for arm, rs in runs.items():
            low, mid, high = anytime(rs, mode, grid, use)
            name = "random search" if arm == BASELINE else COMPARISONS[arm]
            line = ax.plot(grid, mid, label=f"{name} ({len(rs)} seeds)")[0]
            ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.15)
            medians.append(mid[len(grid) // 20:])  # past the first 5%: the searches' start
        ax.axhline(median_target(runs[BASELINE], mode), ls=":", color="grey",
                   label="random search's median final best")
        # the range where the methods differ: from the worst median past the start to the best
        s = sign(mode)
        edge = s * np.nanmin(s * np.asarray(medians))  # the worst median
        margin = s * (0.1 * abs(best - edge) or 0.01)
        ax.set_ylim(*sorted((edge - margin, best + margin)))
        ax.set_xlabel("epochs, all trials together" if not use else clock.replace("_", " "))
        ax.set_ylabel(f"best {metric} so far")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
