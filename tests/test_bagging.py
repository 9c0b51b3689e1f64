"""Bagging on fixed probabilities, and the search.bag command on real CSV files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search.engine.bagging import bag, bag_csvs, vote_labels
from trainables.errors import ConfigError

A = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
B = np.array([[0.5, 0.4, 0.1], [0.1, 0.2, 0.7], [0.2, 0.7, 0.1]])
C = np.array([[0.1, 0.8, 0.1], [0.1, 0.3, 0.6], [0.3, 0.6, 0.1]])


def test_mean_bagging_averages_probabilities() -> None:
    np.testing.assert_allclose(bag([A, B, C]), (A + B + C) / 3)
    # row 0: mean (0.4, 0.5, 0.1) -> class 1, although two of three members say 0
    assert bag([A, B, C]).argmax(1).tolist() == [1, 2, 1]


def test_vote_bagging_counts_argmaxes_and_breaks_ties_by_mean() -> None:
    # argmaxes: row 0: 0, 0, 1 -> 0 (where the mean says 1); row 1: 1, 2, 2 -> 2; row 2: 2, 1, 1 -> 1
    assert bag([A, B, C], "vote").argmax(1).tolist() == [0, 2, 1]
    # two members disagree on row 0 (0 vs 1): the higher mean probability wins (class 1)
    tie = bag([np.array([[0.5, 0.45, 0.05]]), np.array([[0.1, 0.8, 0.1]])], "vote")
    assert tie.argmax(1).tolist() == [1]
    assert vote_labels([np.array([0, 2]), np.array([1, 2]), np.array([1, 0])], 3).tolist() == [1, 2]


def test_unknown_method_is_an_error() -> None:
    with pytest.raises(ConfigError, match="use one of mean, vote"):
        bag([A], "median")


def write(path: Path, ids: list[str], probs: np.ndarray | None, targets: list[int]) -> Path:
    """A prediction CSV as a member's or a Kaggle submission: ID, TARGET[, p0 .. pK]."""
    frame = pd.DataFrame({"ID": ids, "TARGET": targets})
    for c in range(0 if probs is None else probs.shape[1]):
        frame[f"p{c}"] = probs[:, c]
    frame.to_csv(path, index=False)
    return path


def test_bag_csvs_averages_where_probabilities_exist(tmp_path: Path) -> None:
    ids = ["a.jpg", "b.jpg", "c.jpg"]
    a = write(tmp_path / "a.csv", ids, A, [0, 1, 2])
    b = write(tmp_path / "b.csv", ids, B, [0, 2, 1])
    out = bag_csvs([a, b])
    assert out["ID"].tolist() == ids
    np.testing.assert_allclose(out[["p0", "p1", "p2"]].to_numpy(), (A + B) / 2, rtol=1e-6)
    # rows are matched by ID, not by position
    shuffled = pd.read_csv(b).iloc[[2, 0, 1]]
    shuffled.to_csv(tmp_path / "b2.csv", index=False)
    np.testing.assert_allclose(bag_csvs([a, tmp_path / "b2.csv"])[["p0", "p1", "p2"]], (A + B) / 2,
                               rtol=1e-6)


def test_bag_csvs_votes_without_probabilities(tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    files = [write(tmp_path / f"{n}.csv", ids, None, t)
             for n, t in (("x", [0, 1, 4]), ("y", [0, 2, 4]), ("z", [3, 2, 1]))]
    assert bag_csvs(files)["TARGET"].tolist() == [0, 2, 4]


def test_bag_command_refuses_mismatched_ids(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", ["1.jpg", "2.jpg"], A[:2], [0, 1])
    b = write(tmp_path / "b.csv", ["1.jpg", "3.jpg"], B[:2], [0, 1])
    result = subprocess.run([sys.executable, "-m", "search.bag", str(a), str(b), "--out",
                             str(tmp_path / "o.csv")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "IDs disagree" in result.stderr and "b.csv" in result.stderr
    assert not (tmp_path / "o.csv").exists()
    good = subprocess.run([sys.executable, "-m", "search.bag", str(a), str(a), "--out",
                           str(tmp_path / "o.csv")], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert pd.read_csv(tmp_path / "o.csv")["ID"].tolist() == ["1.jpg", "2.jpg"]


@pytest.mark.parametrize(("header", "row", "said"), [
    ("ID,TARGET,p0,p1", "2.jpg,1,0.4,abc", "line 3, column p1: 'abc' is not a probability"),
    ("ID,TARGET,p0,p1", "2.jpg,1,0.4,1.6", "line 3, column p1: 1.6 is not a probability"),
    ("ID,TARGET,p0,p1", "2.jpg,one,0.4,0.6", "line 3, column TARGET: 'one' is not a class"),
    ("ID,TARGET", "2.jpg,1.5", "line 3, column TARGET: 1.5 is not a class"),
    ("ID,TARGET", "2.jpg,-1", "line 3, column TARGET: -1 is not a class"),
    ("ID,ARMD,MH", "2.jpg,0.2,", "line 3, column MH: an empty cell is not"),  # multi-label
    ("ID,ARMD,MH", "2.jpg,0.2,yes", "line 3, column MH: 'yes' is not a probability"),
])
def test_a_bad_cell_is_named_by_file_line_and_column(tmp_path: Path, header: str, row: str,
                                                      said: str) -> None:
    first = {"ID,TARGET,p0,p1": "1.jpg,0,0.7,0.3", "ID,TARGET": "1.jpg,0",
             "ID,ARMD,MH": "1.jpg,0.1,0.9"}[header]
    good = tmp_path / "good.csv"
    good.write_text(f"{header}\n{first}\n{first.replace('1.jpg', '2.jpg')}\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{header}\n{first}\n{row}\n")
    with pytest.raises(ConfigError) as e:
        bag_csvs([good, bad])
    assert str(e.value).startswith(f"{bad}, {said}")
    if "abc" in row:  # the command: one line, no traceback, nothing written
        result = subprocess.run([sys.executable, "-m", "search.bag", str(good), str(bad),
                                 "--out", str(tmp_path / "o.csv")], capture_output=True, text=True)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip() == f"error: {bad}, {said} (0 to 1)"
        assert not (tmp_path / "o.csv").exists()


def test_bag_command_breaks_vote_ties(tmp_path: Path) -> None:
    def bag_command(*files: Path) -> pd.DataFrame:
        out = tmp_path / "out.csv"
        result = subprocess.run([sys.executable, "-m", "search.bag", *map(str, files), "--out",
                                 str(out), "--method", "vote"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return pd.read_csv(out)

    ids = ["a.jpg", "b.jpg"]
    # with probabilities: row a is one vote each for grades 0 and 1; the mean (0.3, 0.625,
    # 0.075) breaks the tie for 1. Row b: both vote 2
    x = write(tmp_path / "x.csv", ids, np.array([[0.5, 0.45, 0.05], [0.1, 0.2, 0.7]]), [0, 2])
    y = write(tmp_path / "y.csv", ids, np.array([[0.1, 0.8, 0.1], [0.2, 0.1, 0.7]]), [1, 2])
    assert bag_command(x, y)["TARGET"].tolist() == [1, 2]
    # labels only: a tie goes to the lower grade (3 vs 1 -> 1; 1 vs 4 -> 1); a majority wins
    p = write(tmp_path / "p.csv", ids, None, [3, 1])
    q = write(tmp_path / "q.csv", ids, None, [1, 4])
    assert bag_command(p, q)["TARGET"].tolist() == [1, 1]
    r = write(tmp_path / "r.csv", ids, None, [3, 4])
    assert bag_command(p, q, r)["TARGET"].tolist() == [3, 4]


def test_weighted_bags_and_greedy_selection_with_replacement() -> None:
    import numpy as np

    from search.engine.bagging import bag, greedy_selection

    a = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    b = np.array([[0.6, 0.4], [0.6, 0.4], [0.1, 0.9]])
    assert np.allclose(bag([a, b], weights=[3, 1]), (3 * a + b) / 4)
    assert np.allclose(bag([a, b], weights=[1, 0]), a)
    labels = np.array([0, 1, 1])

    def accuracy(p: np.ndarray) -> float:
        return float((p.argmax(1) == labels).mean())

    # a alone: 2/3; b alone: 2/3; a+b: row 3 is (0.35, 0.65) -> 1, row 2 (0.4, 0.6) -> 1: 3/3
    assert greedy_selection([a, b], accuracy, rounds=4) == [1, 1]
    # the first best on a tie; a member may be picked again; rounds past the best are dropped
    assert greedy_selection([a, a], accuracy, rounds=3) == [1, 0]
    c = np.array([[0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])  # all right alone
    assert greedy_selection([a, c, b], accuracy, rounds=4) == [0, 1, 0]


def test_a_greedy_bag_scores_at_least_its_best_member_on_the_data_it_was_chosen_on() -> None:
    """Its first pick is the best member alone and it keeps its best round: the invariant the
    final step's greedy bag must hold on validation (quadratic kappa, 5 grades), on many draws
    of noisy members of differing quality."""
    from sklearn.metrics import cohen_kappa_score

    from search.engine.bagging import bag, greedy_selection

    rng = np.random.default_rng(0)
    for _ in range(40):
        labels = rng.integers(0, 5, 60)
        members = [rng.dirichlet(np.ones(5), 60) + q * np.eye(5)[labels]
                   for q in rng.uniform(0, 1.5, 5)]
        members = [m / m.sum(axis=1, keepdims=True) for m in members]

        def qwk(p: np.ndarray, labels: np.ndarray = labels) -> float:
            return float(cohen_kappa_score(labels, p.argmax(1), weights="quadratic"))

        weights = greedy_selection(members, qwk, rounds=8)
        assert qwk(bag(members, weights=weights)) >= max(qwk(m) for m in members) - 1e-12
