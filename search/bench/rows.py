"""A bench record's rows: a measure of medtune's against a baseline's, the ratio that reads
"times better" for medtune, and where a section has one, its target (search.bench)."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

DRAWS = 2000  # bootstrap draws over seeds
LEVEL = 0.95


def row(section: str, measure: str, ours: float, baseline: float,
        higher_is_better: bool, *, target: float | None = None,
        runs: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """A row whose ratio reads 'times better' for ours: >1 means ours wins; with a `target`,
    whether the ratio reaches it; with `runs`, each side's raw measurements (what the medians
    came from: a reader can check them)."""
    num, den = (ours, baseline) if higher_is_better else (baseline, ours)
    ratio = num / den if den else (math.inf if num else math.nan)  # a QWK of 0, say
    out = {"section": section, "measure": measure, "ours": ours, "baseline": baseline,
           "ratio": ratio, "better": "higher" if higher_is_better else "lower"}
    if runs is not None:
        out["runs"] = {"ours": runs[0], "baseline": runs[1]}
    if target is not None:
        out.update(target=target, met=ratio >= target)
    return out


def value_row(section: str, measure: str, value: float, *,
              at_most: float | None = None) -> dict[str, Any]:
    """A row of one number, with no baseline; with `at_most`, whether it stays under it."""
    out = {"section": section, "measure": measure, "ours": value, "baseline": None, "ratio": None}
    if at_most is not None:
        out.update(target=at_most, met=value <= at_most)
    return out


def interval_row(section: str, measure: str, costs: tuple[list[float], list[float]], *,
                 target: float | None = None, **extra: Any) -> dict[str, Any]:
    """A row of costs over seeds where lower is better (epochs, minutes, regret): the lower
    medians of ours and the baseline's, their ratio "times fewer" with its bootstrap interval
    over seeds (`low`, `high`), every seed's cost (`spread`) and, with a `target`, whether the
    ratio reaches it."""
    ours, base = costs
    ratio, low, high = ratio_interval(ours, base)
    out = {"section": section, "measure": measure,
           "ours": float(statistics.median_low(ours)), "baseline": float(statistics.median_low(base)),
           "ratio": ratio, "low": low, "high": high, "level": LEVEL, "better": "lower",
           "spread": [list(ours), list(base)], **extra}
    if target is not None:
        out.update(target=target, met=ratio >= target)
    return out


def _lower_median(values: list[float] | np.ndarray) -> float:
    return float(statistics.median_low(list(values)))


def ratio_interval(ours: list[float], base: list[float], *, seed: int = 0,
                   draws: int = DRAWS) -> tuple[float, float, float]:
    """base / ours of the lower medians over seeds ("times fewer"), and a bootstrap interval:
    each side's seeds resampled on their own. inf where ours is 0 or base is inf (and ours
    is not); a draw where both are inf or 0 is left out."""
    def ratio(b: float, o: float) -> float:
        if (math.isinf(b) and math.isinf(o)) or (b == 0 and o == 0):
            return math.nan
        return math.inf if o == 0 or math.isinf(b) else b / o

    rng = np.random.default_rng(seed)
    o, b = np.array(ours, dtype=float), np.array(base, dtype=float)
    drawn = [ratio(_lower_median(rng.choice(b, len(b))), _lower_median(rng.choice(o, len(o))))
             for _ in range(draws)]
    tail = 100 * (1 - LEVEL) / 2
    finite = np.array([d for d in drawn if d == d])
    # percentiles of actual draws (no interpolation: a draw may be inf)
    low, high = (np.percentile(finite, [tail, 100 - tail], method="inverted_cdf")
                 if len(finite) else (math.nan, math.nan))
    return ratio(_lower_median(b), _lower_median(o)), float(low), float(high)
