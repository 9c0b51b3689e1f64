"""What the search bought: the experiment's own defaults against the search's members and bag.

The final step trains the experiment's default configuration (its `defaults`, and the demo's
under --demo, with none of the searched values: what a user gets without a search) once per
member, with that member's seed, bootstrap sample and epochs, beside the members. Then, on
validation and on a labelled test split, for the task's metric: the defaults' mean and spread
over their seeds, the members' mean, the best member (best on validation) and the bag, each
with its gain over the defaults' mean and a bootstrap 95% interval. A draw resamples patients
(all of a patient's images together, where the data has patient ids; else images) with
replacement, and every model is scored on the same draw, so the interval is of the difference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from search.engine.spec import RunSpec
from spaces.base import Experiment
from trainables.tasks import Task
from trainables.train.config import TrainConfig, config_value

LEVEL = 0.95  # of the intervals
DRAWS = 1000  # bootstrap draws of an interval
CHUNK = 100  # draws scored at once (a draws x images array each)


def defaults_configs(experiment: Experiment, spec: RunSpec,
                     members: list[TrainConfig]) -> list[TrainConfig]:
    """The experiment's default configuration with each member's seed, sample and epochs:
    the run's fixed values (data, --set, budget) over the experiment's defaults (and demo
    settings), and none of the searched values the search chose."""
    base = experiment.config(demo=spec.demo).to_dict()
    default = TrainConfig.from_dict({**base, **spec.fixed})
    return [default.replace(epochs=m.epochs, seed=m.seed, bootstrap=m.bootstrap,
                            max_eval_batches=m.max_eval_batches) for m in members]


def searched_defaults(experiment: Experiment, config: TrainConfig) -> dict[str, Any]:
    """What the defaults use for each searched key (the search varied these; a phase's value
    from its phase)."""
    values = config.to_dict()
    return {key: config_value(values, key) for key in experiment.searched}


def resampling_units(patients: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Row indices per patient (a draw takes a patient's images together), and the unit's
    name: "patients" where some patient has several images, else "images"."""
    _, inverse = np.unique(patients, return_inverse=True)
    groups = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)] if len(patients) \
        else []
    return groups, ("patients" if len(groups) < len(patients) else "images")


@dataclass(frozen=True)
class SplitPredictions:
    """Everything scored on one split: the labels, each default's and each member's
    probabilities (by member number), and the bag's."""

    labels: np.ndarray
    defaults: list[np.ndarray]
    members: dict[int, np.ndarray]
    bag: np.ndarray


def draw_weights(groups: list[np.ndarray], rows: int, draws: int,
                 rng: np.random.Generator) -> np.ndarray:
    """(draws, rows): how often each bootstrap draw takes each row. A draw picks as many units
    (patients, or images) as there are, with replacement, and takes all of a unit's rows."""
    unit_of = np.zeros(rows, dtype=np.int64)
    for u, members in enumerate(groups):
        unit_of[members] = u
    chosen = rng.integers(0, len(groups), (draws, len(groups)))
    picks = np.bincount((chosen + len(groups) * np.arange(draws)[:, None]).ravel(),
                        minlength=draws * len(groups)).reshape(draws, len(groups))
    return picks[:, unit_of].astype(np.float64)


def bootstrap(task: Task, labels: np.ndarray, probs: list[np.ndarray],
              groups: list[np.ndarray], stat: Callable[[np.ndarray], np.ndarray], *,
              draws: int = DRAWS, seed: int = 0) -> dict[str, Any]:
    """`stat` of the models' values (a (rows, models) array of the task's metric to a (rows, k)
    array) on the data, and its bootstrap interval: every model scored on the same draws.
    Returns the models' values, the statistics, their interval's low and high ends, and the
    draws on which every model's metric was defined."""
    point = np.array([[task.value(labels, p) for p in probs]])
    rng = np.random.default_rng(seed)
    chunks = []
    for start in range(0, draws, CHUNK):
        weights = draw_weights(groups, len(labels), min(CHUNK, draws - start), rng)
        values = np.stack([task.resampled(labels, p, weights) for p in probs], axis=1)
        values[~np.isfinite(values).all(axis=1)] = np.nan  # a draw where the metric is undefined
        chunks.append(stat(values))
    drawn = np.concatenate(chunks)
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.nanpercentile(drawn, [tail, 100 - tail], axis=0)
    return {"values": point[0], "estimate": stat(point)[0], "low": low, "high": high,
            "draws": int(np.isfinite(drawn[:, 0]).sum())}


def split_gain(task: Task, split: SplitPredictions, groups: list[np.ndarray],
               best_member: int, *, draws: int = DRAWS, seed: int = 0) -> dict[str, Any]:
    """The defaults' mean and spread, and the members' mean, the best member and the bag
    with their gains over the defaults' mean and a bootstrap interval of each gain."""
    members = sorted(split.members)
    probs = [*split.defaults, *(split.members[n] for n in members), split.bag]
    d, best = len(split.defaults), len(split.defaults) + members.index(best_member)

    def gains(v: np.ndarray) -> np.ndarray:
        """members' mean, best member, bag (columns of `v`: defaults..., members..., bag) per
        row of `v`: how much better each is than the defaults' mean (their difference, turned
        where lower is better: a gain is always > 0 when better); last, the bag over the best
        member (paired: on the same draw)."""
        base = v[:, :d].mean(axis=1)
        return task.sign * np.stack([v[:, d:-1].mean(axis=1) - base, v[:, best] - base,
                                     v[:, -1] - base, v[:, -1] - v[:, best]], axis=1)

    b = bootstrap(task, split.labels, probs, groups, gains, draws=draws, seed=seed)
    point, estimate, low, high = b["values"], b["estimate"], b["low"], b["high"]
    out: dict[str, Any] = {
        "units": len(groups),
        "defaults": {"mean": float(point[:d].mean()), "std": float(point[:d].std()),
                     "values": [float(v) for v in point[:d]]},
    }
    for i, (name, value) in enumerate((("members", float(point[d:-1].mean())),
                                       ("best_member", float(point[best])),
                                       ("bag", float(point[-1])))):
        out[name] = {"value": value, "gain": float(estimate[i]), "low": float(low[i]),
                     "high": float(high[i])}
    out["best_member"]["member"] = best_member
    out["bag_over_best_member"] = {"gain": float(estimate[3]), "low": float(low[3]),
                                   "high": float(high[3])}
    out["draws"] = b["draws"]
    return out


def halves(groups: list[np.ndarray], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The rows of two halves of a split, its units (patients, or images) shuffled by `seed`
    and cut in two (the first half the larger by one unit when their count is odd)."""
    order = np.random.default_rng(seed).permutation(len(groups))
    first, second = np.array_split(order, 2)
    return tuple(np.sort(np.concatenate([groups[u] for u in part] or [np.array([], int)]))
                 for part in (first, second))  # type: ignore[return-value]


def cross_fitted(task: Task, labels: np.ndarray, members: list[np.ndarray], *, method: str,
                 top_k: list[float], rounds: int, groups: list[np.ndarray],
                 draws: int = DRAWS, seed: int = 0) -> dict[str, Any]:
    """The greedy bag measured on data it was not chosen on: greedy selection on one half of
    the split predicts the other half, and the other way round; the two halves' predictions
    together are scored as one. Beside it the top-k bag (`top_k`: its weights, chosen on
    nothing here) on the same rows, and the greedy bag's gain over it, each with a bootstrap
    interval over `groups`."""
    from search.engine.bagging import bag, greedy_selection

    cut = halves(groups, seed)
    greedy = np.zeros_like(members[0], dtype=np.float64)  # each row from the other half
    chosen = []
    for pick, scored in ((cut[0], cut[1]), (cut[1], cut[0])):

        def score(probs: np.ndarray, rows: np.ndarray = pick) -> float:
            return task.sign * task.value(labels[rows], probs)

        weights = greedy_selection([m[pick] for m in members], score, rounds=rounds)
        greedy[scored] = bag([m[scored] for m in members], method, [float(w) for w in weights])
        chosen.append(weights)

    def stat(v: np.ndarray) -> np.ndarray:  # greedy, top-k, greedy over top-k (signed)
        return np.column_stack([v[:, 0], v[:, 1], task.sign * (v[:, 0] - v[:, 1])])

    b = bootstrap(task, labels, [greedy, bag(members, method, top_k)], groups, stat,
                  draws=draws, seed=seed)
    out: dict[str, Any] = {"metric": task.metric, "name": task.name, "level": LEVEL,
                           "units": len(groups), "halves": [len(c) for c in cut],
                           "weights": chosen, "draws": b["draws"]}
    for i, name in enumerate(("greedy", "top_k", "greedy_over_top_k")):
        out[name] = {"value" if i < 2 else "gain": float(b["estimate"][i]),
                     "low": float(b["low"][i]), "high": float(b["high"][i])}
    return out


def describe_cross_fitted(c: dict[str, Any]) -> str:
    """One line: the greedy bag cross-fitted, the top-k bag, and the difference."""
    level = int(100 * c["level"])

    def part(label: str, r: dict[str, Any], key: str) -> str:
        sign = "+" if key == "gain" else ""
        return (f"{label} {r[key]:{sign}.4f} ({level}% [{r['low']:{sign}.4f}, "
                f"{r['high']:{sign}.4f}])")

    return ("the greedy bag where it was not chosen (cross-fitted): validation "
            f"{c['name']}, each half ({c['halves'][0]} and {c['halves'][1]} images) predicted by "
            "the greedy weights chosen on the other: "
            + "; ".join([part("greedy bag", c["greedy"], "value"),
                         part("top-k bag", c["top_k"], "value"),
                         part("greedy over top-k", c["greedy_over_top_k"], "gain")]))


def gain_summary(task: Task, splits: dict[str, SplitPredictions], patients: dict[str, np.ndarray],
                 *, defaults: dict[str, Any]) -> dict[str, Any]:
    """`final/metrics.json`'s `gain`: per split (validation, and test where labelled);
    `defaults` says what they were (config, seeds, failures)."""
    val = splits["val"]
    best = max(val.members, key=lambda n: task.sign * task.value(val.labels, val.members[n]))
    out: dict[str, Any] = {"metric": task.metric, "name": task.name, "level": LEVEL,
                           "defaults": defaults}
    for name, split in splits.items():
        groups, unit = resampling_units(patients[name])
        out["unit"] = unit
        out[name] = split_gain(task, split, groups, best)
    return out


def _signed(v: float) -> str:
    return f"{v:+.4f}"


def describe_gain(gain: dict[str, Any], split: str) -> str:
    """One line: defaults, best member and bag on a split, each gain with its interval."""
    s = gain[split]
    best = s["best_member"]

    def part(label: str, r: dict[str, Any]) -> str:
        return (f"{label} {r['value']:.4f} ({_signed(r['gain'])}, {int(100 * gain['level'])}% "
                f"[{_signed(r['low'])}, {_signed(r['high'])}])")

    where = "validation" if split == "val" else "test"
    line = (f"{where} {gain['name']} over {s['units']} {gain['unit']}: defaults "
            f"{s['defaults']['mean']:.4f} ± {s['defaults']['std']:.4f} "
            f"({len(s['defaults']['values'])} seeds); "
            + "; ".join([part("members' mean", s["members"]),
                         part(f"best member ({best['member']})", best), part("bag", s["bag"])]))
    if "bag_over_best_member" in s:  # records written before it lack it
        r = s["bag_over_best_member"]
        line += (f"; bag over its best member {_signed(r['gain'])} ({int(100 * gain['level'])}% "
                 f"[{_signed(r['low'])}, {_signed(r['high'])}])")
    return line


def gain_lines(gain: dict[str, Any]) -> str:
    lines = ["what the search bought over the experiment's defaults (the same seeds and samples):"]
    lines += [f"  {describe_gain(gain, split)}" for split in ("val", "test") if split in gain]
    if "val" in gain:
        lines.append(f"  {verdict(gain)}")
    for f in gain["defaults"]["failed"]:
        lines.append(f"  defaults with seed {f['seed']} failed: {f['error']}")
    if "val" not in gain:
        lines.append("  every default failed: nothing to compare the search with")
    return "\n".join(lines)


def verdict(gain: dict[str, Any]) -> str:
    """Whether the gain is more than noise: its interval excludes zero, or not (test first)."""
    split = "test" if "test" in gain else "val"
    bag = gain[split]["bag"]
    where = "test" if split == "test" else "validation (which also chose the members)"
    if bag["low"] > 0:
        return f"the bag beats the defaults on {where}: the interval excludes zero"
    if bag["high"] < 0:
        return f"the defaults beat the bag on {where}: the interval excludes zero"
    return (f"the bag and the defaults are not told apart on {where}: the interval holds "
            "zero (more data, or a longer search, would have to show a difference)")
