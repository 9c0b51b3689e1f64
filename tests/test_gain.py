"""What the search bought (search.engine.gain): the defaults' configuration, the gains and their
bootstrap intervals, checked against numbers worked out by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from search.engine.gain import (
    SplitPredictions,
    cross_fitted,
    defaults_configs,
    describe_cross_fitted,
    describe_gain,
    draw_weights,
    gain_summary,
    halves,
    resampling_units,
    split_gain,
    verdict,
)
from search.run import parse_args, resolve
from spaces import get_experiment
from trainables.tasks import GRADING, MULTILABEL, classes_task, task_of

ACCURACY = classes_task("val/accuracy")


def onehot(classes: list[int], confidence: float = 1.0, n: int = 2) -> np.ndarray:
    out = np.full((len(classes), n), (1 - confidence) / (n - 1))
    out[np.arange(len(classes)), classes] = confidence
    return out


def example() -> SplitPredictions:
    """Labels 0,1,0,1. Defaults: all 0 (accuracy 0.5) and 0,1,1,1 (0.75): mean 0.625, std
    0.125. Member 1 right on all four (0.9 sure), member 2 says 0,1,0,0 (0.6 sure): 1.0 and
    0.75, mean 0.875. The bag's fourth image: (0.9 + 0.4) / 2 = 0.65 for class 1: all right."""
    labels = np.array([0, 1, 0, 1])
    return SplitPredictions(
        labels=labels, defaults=[onehot([0, 0, 0, 0]), onehot([0, 1, 1, 1])],
        members={1: onehot([0, 1, 0, 1], 0.9), 2: onehot([0, 1, 0, 0], 0.6)},
        bag=(onehot([0, 1, 0, 1], 0.9) + onehot([0, 1, 0, 0], 0.6)) / 2)


def test_gains_over_the_defaults_are_the_hand_worked_ones() -> None:
    split = example()
    groups, unit = resampling_units(np.array(["a", "b", "c", "d"]))
    assert unit == "images" and [g.tolist() for g in groups] == [[0], [1], [2], [3]]
    out = split_gain(ACCURACY, split, groups, best_member=1, draws=500)
    assert out["defaults"] == {"mean": 0.625, "std": 0.125, "values": [0.5, 0.75]}
    assert out["members"]["value"] == 0.875 and out["members"]["gain"] == 0.25
    assert out["best_member"]["value"] == 1.0 and out["best_member"]["gain"] == 0.375
    assert out["bag"]["value"] == 1.0 and out["bag"]["gain"] == 0.375
    for key in ("members", "best_member", "bag"):
        r = out[key]
        assert r["low"] < r["gain"] <= r["high"], (key, r)  # images vary: a real interval
    # the best member is right on every image, so its gain on a draw is 1 less the defaults'
    # mean there. The defaults are right twice on the first image and once on each other one:
    # their mean on any draw is between 0.5 and 1, and the gain between 0 and 0.5
    assert out["best_member"]["low"] >= 0.0 and out["best_member"]["high"] <= 0.5
    assert out["units"] == 4 and out["draws"] == 500
    # the bag over its best member, paired on each draw: both right on every image, so 0 on
    # every draw; over member 2 (0,1,0,0): the bag is right where it is, and on image 4 too,
    # so the difference on a draw is image 4's share of it, between 0 and 1
    assert out["bag_over_best_member"] == {"gain": 0.0, "low": 0.0, "high": 0.0}
    other = split_gain(ACCURACY, split, groups, best_member=2, draws=500)["bag_over_best_member"]
    assert other["gain"] == 0.25 and 0.0 <= other["low"] < 0.25 < other["high"] <= 1.0


def test_a_patient_is_resampled_whole() -> None:
    # one patient holds all four images: every draw is the whole split, so the interval of
    # each gain is the gain itself
    groups, unit = resampling_units(np.array(["p1"] * 4))
    assert unit == "patients" and len(groups) == 1
    out = split_gain(ACCURACY, example(), groups, best_member=1, draws=50)
    for key, gain in (("members", 0.25), ("best_member", 0.375), ("bag", 0.375)):
        assert out[key]["low"] == out[key]["high"] == gain
    groups, unit = resampling_units(np.array(["p1", "p2", "p1", "p2"]))
    assert unit == "patients" and [g.tolist() for g in groups] == [[0, 2], [1, 3]]


def test_no_difference_gives_an_interval_of_zero_and_the_verdict_says_so() -> None:
    labels = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    good = onehot([0, 1, 2, 3, 4, 0, 1, 1], 0.8, n=5)
    split = SplitPredictions(labels, [good, good], {1: good, 2: good}, good)
    units = np.array([f"p{i}" for i in range(8)])
    gain = gain_summary(GRADING, {"val": split}, {"val": units},
                        defaults={"config": {}, "seeds": [1, 2], "failed": []})
    for key in ("members", "best_member", "bag"):
        assert gain["val"][key]["gain"] == gain["val"][key]["low"] == gain["val"][key]["high"] == 0
    assert gain["val"]["draws"] == 1000 and gain["unit"] == "images"
    assert "not told apart on validation" in verdict(gain)
    assert describe_gain(gain, "val").startswith("validation QWK over 8 images: defaults")
    # QWK by hand: 7 of 8 right, the last one grade off (1 for 2), weights (i-j)^2 / 16.
    # Observed: sum(w * O) = 1/16 of one image in 8 = 8/1024. Expected from the marginals
    # (truth 2,2,2,1,1; predicted 2,3,1,1,1): sum_ij r_i c_j (i-j)^2 = 64+32+32+32+64 = 224,
    # over 16 * 8^2: 224/1024. kappa = 1 - 8/224 = 27/28
    assert gain["val"]["defaults"]["mean"] == pytest.approx(27 / 28)


def test_a_draw_where_the_metric_is_undefined_is_left_out() -> None:
    # two labels; a draw of only the first image has no negative for label 0, no positive
    # for label 1: macro AUROC is undefined there and the draw does not count
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6], [0.1, 0.3]])
    split = SplitPredictions(labels, [probs * 0.5], {1: probs}, probs)
    groups, _ = resampling_units(np.arange(4))
    out = split_gain(MULTILABEL, split, groups, best_member=1, draws=1000)
    # scaling every probability by 0.5 keeps each label's ranking: AUROC, and the gain, the same
    assert out["defaults"]["mean"] == out["bag"]["value"] == 1.0
    # only a draw of one image four times over is undefined: 4 / 4**4 of them, about 16
    assert 960 < out["draws"] < 1000


@pytest.mark.parametrize(("kind", "key"), [("grading", "kappa"), ("grading", "accuracy"),
                                           ("classes", "f1_macro"),
                                           ("classes", "balanced_accuracy"),
                                           ("multilabel", "auroc_macro"), ("multilabel", "map")])
def test_every_draw_scores_as_scikit_learn_scores_its_rows_repeated(kind: str, key: str) -> None:
    rng = np.random.default_rng(3)
    n, classes = 12, 4
    if kind == "multilabel":  # ties in the scores; label 2 positive on two images only
        labels = (rng.random((n, 3)) < 0.4).astype(np.float32)
        labels[:, 2] = 0
        labels[[0, 5], 2] = 1
        probs = rng.integers(0, 4, (n, 3)) / 4
    else:  # class 2 never true nor predicted: scikit-learn's QWK spaces classes 1 and 3 one apart
        labels = rng.choice([0, 1, 3], n)
        probs = rng.random((n, classes))
        probs[:, 2] = 0
    groups, _ = resampling_units(np.arange(n) // 2)  # patients of two images
    weights = np.concatenate([
        draw_weights(groups, n, 200, rng),
        np.eye(n)[[0]] * 3,  # one image alone: one class only (QWK 0), no AUROC defined
        np.eye(n)[[0, 5]].sum(axis=0, keepdims=True),  # label 2's two positives alone
    ])
    task = task_of(kind, f"val/{key}")
    fast = task.resampled(labels, probs, weights)
    with warnings.catch_warnings():  # a class predicted that no image of a draw has
        warnings.simplefilter("ignore", UserWarning)
        slow = task.per_draw(labels, probs, weights)  # scikit-learn, rows repeated
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    assert np.isfinite(fast[:200]).all() and len(set(np.round(fast[:200], 9))) > 5


def test_a_draw_takes_whole_patients() -> None:
    groups, _ = resampling_units(np.array(["a", "b", "a", "c", "c", "c"]))
    weights = draw_weights(groups, 6, 500, np.random.default_rng(0))
    assert weights.shape == (500, 6) and (weights.sum(axis=1) > 0).all()
    assert (weights[:, 0] == weights[:, 2]).all() and (weights[:, 3] == weights[:, 5]).all()
    # three patients drawn per draw: their rows' counts add up to 3 patients' worth
    patients = weights[:, 0] + weights[:, 1] + weights[:, 3]
    assert (patients == 3).all() and 0.2 < (weights[:, 1] == 0).mean() < 0.4  # (2/3)^3 = 0.30


def test_the_greedy_bag_cross_fitted_is_scored_where_it_was_not_chosen() -> None:
    """Member 1 is right (0.9 sure) on half A and wrong on half B, member 2 the other way
    round, member 3 right everywhere but only 0.6 sure. Greedy selection on A picks member 1
    (the first of two perfect ones there) and predicts B all wrong; on B it picks member 2 and
    predicts A all wrong: cross-fitted accuracy 0. The top-k bag (the three averaged) puts
    (0.9 + 0.1 + 0.6) / 3 on the right class everywhere: 1. Every bootstrap draw says the same,
    so the interval of the difference is [-1, -1]. (Chosen on all of validation, greedy would
    take member 3 alone and score 1: the in-sample number hides the choice.)"""
    labels = np.arange(40) % 2
    groups, _ = resampling_units(np.arange(40))
    a, b = halves(groups)
    assert len(a) == len(b) == 20 and sorted([*a, *b]) == list(range(40))
    first, second = onehot(labels, 0.9), onehot(labels, 0.9)
    first[b], second[a] = first[b][:, ::-1], second[a][:, ::-1]
    members = [first, second, onehot(labels, 0.6)]
    c = cross_fitted(ACCURACY, labels, members, method="mean", top_k=[1.0, 1.0, 1.0],
                     rounds=6, groups=groups)
    assert c["weights"] == [[1, 0, 0], [0, 1, 0]] and c["halves"] == [20, 20]
    assert (c["greedy"]["value"], c["top_k"]["value"]) == (0.0, 1.0)
    assert c["greedy_over_top_k"] == {"gain": -1.0, "low": -1.0, "high": -1.0}
    assert c["draws"] == 1000 and c["units"] == 40
    assert "greedy bag 0.0000 (95% [0.0000, 0.0000])" in describe_cross_fitted(c)
    # a patient's images stay in one half
    patients = np.repeat(np.arange(10), 4)
    cut = halves(resampling_units(patients)[0], seed=3)
    assert set(patients[cut[0]]).isdisjoint(set(patients[cut[1]]))
    assert sorted(len(rows) for rows in cut) == [20, 20]


def test_the_defaults_are_the_experiments_own_configuration_with_each_members_seeds() -> None:
    experiment = get_experiment("deepdrid_finetune")
    spec = resolve(parse_args(["deepdrid_finetune", "--demo", "--set", "batch_size=16",
                               "--max-epochs", "4"]), experiment)
    spec = spec.replace(fixed={**spec.fixed, "data": "/data/somewhere"})
    members = [experiment.config(demo=True, overrides={"lr": 5e-5, "unfreeze_depth": 0,
                                                       "seed": 1 + i, "bootstrap": i,
                                                       "epochs": 4})
               for i in range(3)]
    defaults = defaults_configs(experiment, spec, members)
    assert [(d.seed, d.bootstrap, d.epochs) for d in defaults] == [(1, 0, 4), (2, 1, 4), (3, 2, 4)]
    for d in defaults:
        assert d.lr == 1e-3  # the demo's own lr (spaces/deepdrid_finetune.py DEMO), not 5e-5
        assert d.unfreeze_depth == "all" and d.augment == "flip+rotate"  # the defaults'
        assert d.batch_size == 16  # --set fixes it for every trial, the defaults included
        assert (d.model, d.weights, d.data) == ("efficientnet_lite0", "bundled", "/data/somewhere")
