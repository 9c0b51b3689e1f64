"""A bench record's rows: a measure of medtune's against a baseline's, the ratio that reads
"times better" for medtune, and where a section has one, its target (search.bench)."""

from __future__ import annotations

import statistics
from typing import Any


def row(section: str, measure: str, ours: float, baseline: float,
        higher_is_better: bool, *, target: float | None = None) -> dict[str, Any]:
    """A row whose ratio reads 'times better' for ours: >1 means ours wins; with a `target`,
    whether the ratio reaches it."""
    ratio = ours / baseline if higher_is_better else baseline / ours
    out = {"section": section, "measure": measure, "ours": ours, "baseline": baseline,
           "ratio": ratio, "better": "higher" if higher_is_better else "lower"}
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
    from search.efficiency import LEVEL, ratio_interval

    ours, base = costs
    ratio, low, high = ratio_interval(ours, base)
    out = {"section": section, "measure": measure,
           "ours": float(statistics.median_low(ours)), "baseline": float(statistics.median_low(base)),
           "ratio": ratio, "low": low, "high": high, "level": LEVEL, "better": "lower",
           "spread": [list(ours), list(base)], **extra}
    if target is not None:
        out.update(target=target, met=ratio >= target)
    return out
