"""Bagging predictions: averaged probabilities or a majority vote; submission CSVs per task.

Single-label tasks (grades, classes) write `ID,TARGET` (the Kaggle form; class names in a
`class` column for class folders) and members add `p0..pK`; a multi-label task writes `ID` and
one probability column per label, in the dataset's order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from trainables.errors import ConfigError

METHODS = ("mean", "vote")


def bag(members: list[np.ndarray], method: str = "mean",
        weights: list[float] | None = None) -> np.ndarray:
    """Combine members' (N, C) class probabilities into the bag's (N, C) scores.

    mean: the average probability. vote: each member's argmax is one vote; the score is the
    share of votes, and ties go to the class with the higher mean probability. `weights`
    (e.g. how often greedy selection picked each member; 0 leaves it out) weigh both.
    """
    if method not in METHODS:
        raise ConfigError(f"bagging method {method!r}: use one of {', '.join(METHODS)}")
    stack = np.stack(members)  # (M, N, C)
    w = np.ones(len(stack)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mean = np.tensordot(w, stack, axes=1)
    if method == "mean":
        return mean
    votes = np.zeros_like(mean)
    for share, member in zip(w, stack, strict=True):
        votes[np.arange(len(member)), member.argmax(axis=1)] += share
    return votes + 1e-6 * mean  # the tie-break cannot outweigh one vote


def greedy_selection(members: list[np.ndarray], score: Callable[[np.ndarray], float], *,
                     rounds: int) -> list[int]:
    """Ensemble selection with replacement (Caruana et al., 2004): start from nothing and add,
    `rounds` times, the member whose addition scores best (higher is better; the first on a
    tie); the picks up to the best-scoring round are the ensemble. Returns each member's
    count of picks."""
    total = np.zeros_like(members[0], dtype=np.float64)
    picks: list[int] = []
    best, best_len = -np.inf, 0
    for size in range(1, rounds + 1):
        scores = [score((total + m) / size) for m in members]
        chosen = int(np.argmax(scores))
        total += members[chosen]
        picks.append(chosen)
        if scores[chosen] > best:
            best, best_len = scores[chosen], size
    return [picks[:best_len].count(i) for i in range(len(members))]


def vote_labels(labels: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Majority vote over hard labels (N,) of each member; ties go to the lower grade."""
    counts = np.zeros((len(labels[0]), num_classes))
    for member in labels:
        counts[np.arange(len(member)), member] += 1
    return counts.argmax(axis=1)


def read_predictions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(f"{path} not found")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise ConfigError(f"{path} is not a readable CSV ({e})") from e
    missing = [c for c in ("ID", "TARGET") if c not in frame]
    if missing == ["TARGET"] and len(frame.columns) > 1:
        missing = []  # a multi-label file: ID and one probability column per label
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; found "
                          f"{', '.join(frame.columns)}")
    if frame["ID"].duplicated().any():
        dup = frame.loc[frame["ID"].duplicated(), "ID"].iloc[0]
        raise ConfigError(f"{path}: ID {dup} appears more than once")
    if "TARGET" in frame:
        _check_cells(path, frame, ["TARGET"], "a class number (0, 1, ...)", integers=True)
    probabilities = [c for c in frame.columns if c != "ID" and (
        "TARGET" not in frame or (c.startswith("p") and c[1:].isdigit()))]
    _check_cells(path, frame, probabilities, "a probability (0 to 1)")
    return frame


def _check_cells(path: Path, frame: pd.DataFrame, columns: list[str], what: str, *,
                 integers: bool = False) -> None:
    """The first cell of `columns` that is not `what`, by its CSV line and column."""
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        if integers:
            bad = values.isna() | (values < 0) | (values != values.round())
        else:
            bad = values.isna() | (values < 0) | (values > 1)
        if bad.any():
            row = int(bad.to_numpy().argmax())
            cell = frame[column].iloc[row]
            shown = ("an empty cell" if pd.isna(cell) else repr(cell) if isinstance(cell, str)
                     else f"{cell:g}")
            raise ConfigError(f"{path}, line {row + 2}, column {column}: {shown} is not {what}")
        frame[column] = values.astype(int) if integers else values


def bag_csvs(paths: list[Path], method: str = "mean") -> pd.DataFrame:
    """Bag prediction CSVs: probabilities averaged where every file has them, else a vote.

    Rows are matched by ID (in the first file's order); files whose IDs disagree are refused.
    """
    frames = [read_predictions(p) for p in paths]
    first = frames[0]
    ids = list(first["ID"])
    for path, frame in zip(paths[1:], frames[1:], strict=True):
        extra, missing = set(frame["ID"]) - set(ids), set(ids) - set(frame["ID"])
        if extra or missing:
            sample = sorted(map(str, extra | missing))[:3]
            raise ConfigError(f"{path}: its IDs disagree with {paths[0]} ({len(missing)} missing,"
                              f" {len(extra)} extra, e.g. {', '.join(sample)})")
    aligned = [f.set_index("ID").loc[ids] for f in frames]
    if all("TARGET" not in f for f in aligned):
        return _bag_labels(paths, aligned, ids, method)
    cols = [c for c in aligned[0].columns if c.startswith("p") and c[1:].isdigit()]
    if cols and all(all(c in f for c in cols) for f in aligned):
        probs = bag([f[cols].to_numpy(float) for f in aligned], method)
        out = pd.DataFrame({"ID": ids, "TARGET": probs.argmax(axis=1)})
        for c, name in enumerate(cols):
            out[name] = probs[:, c]
        return out
    num_classes = int(max(f["TARGET"].max() for f in aligned)) + 1
    targets = vote_labels([f["TARGET"].to_numpy(int) for f in aligned], num_classes)
    return pd.DataFrame({"ID": ids, "TARGET": targets})


def _bag_labels(paths: list[Path], aligned: list[pd.DataFrame], ids: list[str],
                method: str) -> pd.DataFrame:
    """Multi-label files: the mean probability per label; the files must name the same labels."""
    labels = list(aligned[0].columns)
    for path, frame in zip(paths[1:], aligned[1:], strict=True):
        if list(frame.columns) != labels:
            raise ConfigError(f"{path}: its label columns differ from {paths[0]}'s")
    if method != "mean":
        raise ConfigError("multi-label files are bagged by averaging (--method mean)")
    probs = bag([f[labels].to_numpy(float) for f in aligned], "mean")
    return pd.DataFrame({"ID": ids, **{name: probs[:, j] for j, name in enumerate(labels)}})
