"""`--objectives METRIC,latency|params|...`: a search on several objectives, with early stopping.

Optuna's multi-objective studies cannot prune (optuna#3450; its TPE fails on a pruned trial
that has intermediate values in such a study), Ray Tune answers "use a weighted sum"
(ray#8018), W&B has none (wandb#3032). Here Optuna's multi-objective sampler (TPE, or NSGA-II
with `--sampler nsga2`) proposes, ASHA stops trials on the first objective (the experiment's
metric), and the study is told:
- a full-length trial COMPLETE with every objective's value at its best epoch (by the first);
- a trial ASHA stopped PRUNED, with no values and no intermediate values (its first
  objective's curve is its user attribute `curve`);
The costs are measured by the trial itself (`report_cost`): `latency` is the median
milliseconds of a forward pass of one image at the trial's size on the trial's device
(`model/latency_ms`), `params` the model's parameter count (`model/params`).

After the search, `best/pareto.json` holds the full-length trials no other beats on every
objective, best first by the first objective; `search.final --pick "latency<=20"` takes the
final step's members from that front under constraints.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any

from trainables.errors import ConfigError
from trainables.tasks import better

COSTS = {"latency": "model/latency_ms", "params": "model/params"}  # lower is better
REPORTED = ("train/", "val/")  # prefixes of the metrics a trial reports


@dataclass(frozen=True)
class Objective:
    key: str  # the reported metric
    mode: str  # "max" or "min"

    @property
    def name(self) -> str:
        return name_of(self.key)


def name_of(key: str) -> str:
    """An objective's name: `latency` / `params` for the costs, else the metric's key."""
    return next((alias for alias, k in COSTS.items() if k == key), key)


def parse_objectives(text: str, metric: str, mode: str) -> list[Objective]:
    """`METRIC,latency,val/loss:min,...`: the experiment's metric first (ASHA stops on it and
    trials rank by it), then costs (`latency`, `params`) or reported metrics, each lower- or
    higher-is-better by its name (`loss`, costs: lower) unless `:min` / `:max` says."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) < 2:
        raise ConfigError(f"--objectives {text}: give two or more, the experiment's metric "
                          f"first (e.g. {metric},latency)")
    out: list[Objective] = []
    for i, name in enumerate(names):
        given, _, direction = name.partition(":")
        if direction and direction not in ("min", "max"):
            raise ConfigError(f"--objectives: {name}: after ':' comes min or max")
        key = COSTS.get(given, given)
        if i == 0 and key != metric:
            raise ConfigError(f"--objectives {text}: the first objective is what ASHA stops on "
                              f"and trials rank by: the experiment's metric {metric} (then "
                              "latency, params or a reported metric such as val/loss)")
        if key not in COSTS.values() and not key.startswith(REPORTED):
            raise ConfigError(f"--objectives: unknown objective {given!r}: latency, params, or "
                              f"a metric the trial reports ({', '.join(p + '...' for p in REPORTED)})")
        natural = mode if key == metric else "min" if key in COSTS.values() or \
            key.endswith("loss") else "max"
        out.append(Objective(key, direction or natural))
    if len({o.key for o in out}) < len(out):
        raise ConfigError(f"--objectives {text}: an objective is named twice")
    return out


def needs_cost(objectives: list[Objective]) -> bool:
    return any(o.key in COSTS.values() for o in objectives)


def dominates(a: list[float], b: list[float], modes: list[str]) -> bool:
    """Whether `a` is at least as good as `b` on every objective and better on one."""
    pairs = list(zip(a, b, modes, strict=True))
    return any(better(x, y, m) for x, y, m in pairs) and not any(
        better(y, x, m) for x, y, m in pairs)


def front(points: list[tuple[Any, list[float]]], modes: list[str]) -> list[Any]:
    """The keys of the points no other point dominates, in the order given."""
    return [key for key, values in points
            if not any(dominates(other, values, modes) for _, other in points)]


_CONSTRAINT = re.compile(r"^\s*([\w/.]+)\s*(<=|>=|<|>|==)\s*([-+0-9.eE]+)\s*$")
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
        "==": operator.eq}


def parse_pick(text: str) -> list[tuple[str, str, float]]:
    """`latency<=20,params<5e6`: (objective name, operator, bound) each."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _CONSTRAINT.match(part)
        if not match:
            raise ConfigError(f"--pick {part!r}: write NAME<=NUMBER (or <, >=, >, ==), e.g. "
                              "latency<=20")
        name, op, bound = match.groups()
        out.append((name_of(name), op, float(bound)))
    return out


def meets(objectives: dict[str, float], constraints: list[tuple[str, str, float]]) -> bool:
    """Whether a trial's objective values meet every constraint (a constraint on a value the
    trial does not have is an error: ConfigError)."""
    for key, op, bound in constraints:
        if key not in objectives:
            raise ConfigError(f"--pick: {key} is not one of the search's objectives "
                              f"({', '.join(objectives)})")
        if not _OPS[op](objectives[key], bound):
            return False
    return True
