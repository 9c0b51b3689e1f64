"""--objectives: parsing, the Pareto front and --pick's constraints by hand; a real search on
two objectives and a final step that picks from its front is in test_search.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from search.engine.objectives import (
    Objective,
    dominates,
    front,
    meets,
    parse_objectives,
    parse_pick,
)
from trainables.errors import ConfigError


def test_objectives_are_the_metric_first_then_costs_or_reported_metrics() -> None:
    got = parse_objectives("val/kappa, latency,params,val/loss,val/f1_macro,train/loss:max",
                           "val/kappa", "max")
    assert got == [Objective("val/kappa", "max"), Objective("model/latency_ms", "min"),
                   Objective("model/params", "min"), Objective("val/loss", "min"),
                   Objective("val/f1_macro", "max"), Objective("train/loss", "max")]
    assert [o.name for o in got[:3]] == ["val/kappa", "latency", "params"]
    for text, why in (("val/kappa", "give two or more"),
                      ("latency,val/kappa", "the first objective is what ASHA stops on"),
                      ("val/kappa,speed", "unknown objective 'speed'"),
                      ("val/kappa,latency:fast", "after ':' comes min or max"),
                      ("val/kappa,latency,model/latency_ms", "named twice")):
        with pytest.raises(ConfigError, match=why):
            parse_objectives(text, "val/kappa", "max")


def test_the_front_is_every_point_no_other_beats_on_every_objective() -> None:
    rng = np.random.default_rng(0)
    points = [(i, [float(a), float(b)]) for i, (a, b) in enumerate(rng.random((40, 2)))]
    modes = ["max", "min"]  # e.g. QWK up, latency down
    got = front(points, modes)
    # by hand: sorted by the first objective, best first, a point is on the front when its
    # latency is below every latency of the points with a higher value
    by_hand = []
    for i, (a, b) in points:
        better = [q for _, (p, q) in points if p > a]
        if all(b < q for q in better):
            by_hand.append(i)
    assert got == by_hand and 2 <= len(got) < 40
    for i, j in itertools.permutations(got, 2):  # none on the front beats another there
        assert not dominates(points[i][1], points[j][1], modes)
    assert front([(0, [1.0, 1.0]), (1, [1.0, 1.0])], modes) == [0, 1]  # ties: both stay


def test_pick_constraints_read_names_and_bounds() -> None:
    constraints = parse_pick("latency<=20, params<5e6,val/kappa>=0.5")
    assert constraints == [("latency", "<=", 20.0), ("params", "<", 5e6),
                           ("val/kappa", ">=", 0.5)]
    assert parse_pick("model/latency_ms<20") == [("latency", "<", 20.0)]
    ok = {"val/kappa": 0.6, "latency": 20.0, "params": 1e6}
    assert meets(ok, constraints)
    assert not meets({**ok, "latency": 20.5}, constraints)
    assert not meets({**ok, "val/kappa": 0.49}, constraints)
    with pytest.raises(ConfigError, match="params is not one of the search's objectives"):
        meets({"val/kappa": 0.6, "latency": 3.0}, constraints)
    with pytest.raises(ConfigError, match="write NAME<=NUMBER"):
        parse_pick("latency is small")
